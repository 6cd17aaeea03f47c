// pause is the sandbox ("infra") container of every pod on the dev cluster's
// nodes: it holds the pod's namespaces open and does nothing else. As PID 1 of
// a pod with a shared process namespace it also reaps orphaned children.
// Upstream's pause is C; this is the same behaviour in Go so it builds from
// the Go toolchain the cluster already needs (a static binary, no libc).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; Wait4 with WNOHANG returns 0 when none is left.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
