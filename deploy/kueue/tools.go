//go:build tools

// Package tools pins Kueue's manager (cmd/kueue), which the sandbox runs against
// its control plane with `yolofit sandbox up --with-kueue`. Its CRDs are read from
// the same module's source (config/components/crd) in the Go module cache.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
