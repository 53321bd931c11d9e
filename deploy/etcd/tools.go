//go:build tools

// Package tools pins the etcd server the local control plane runs.
//
// Why not Debian's etcd-server: bookworm ships etcd 3.4.23, and Kubernetes 1.37 is
// built and tested against etcd 3.6/3.7 (its own go.mod requires etcd client v3.7.0).
// Why a module instead of `go install go.etcd.io/etcd/server/v3@v3.7.3`: etcd's go.mod
// carries replace directives, which `go install pkg@version` refuses; a module that
// requires it builds the same package.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
