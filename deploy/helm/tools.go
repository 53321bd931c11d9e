//go:build tools

// Package tools pins the Helm command that the chart's tests build and run.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
