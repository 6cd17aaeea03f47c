// kstatus prints Flux's verdict (sigs.k8s.io/cli-utils/pkg/kstatus) for Kubernetes objects given as
// JSON files, one line each: "<file>\t<status>\t<message>". kiln's tests compare it with what they expect
// for TrainingRuns in every phase (tests/unit/operator/test_kstatus.py).
package main

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kstatus FILE.json...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// The unstructured decoder keeps integers int64, as the API machinery does (kstatus needs that).
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("%s\t%s\t%s\n", path, res.Status, res.Message)
	}
}
