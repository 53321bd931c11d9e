//go:build tools

// Package tools pins kwok, which plays the kubelets of the simulated GPU nodes:
// it marks the fleet's nodes Ready and moves pods bound to them through the
// stages in deploy/kwok-stages.yaml.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
