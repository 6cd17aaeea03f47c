//go:build tools

// Package tools pins the versitygw module (the dev cluster's S3 server) so
// `go build github.com/versity/versitygw/cmd/versitygw` builds the pinned version.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
