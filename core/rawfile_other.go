//go:build !linux

package core

import (
	"io"
	"os"
)

func openForHash(path string) (io.ReadCloser, error) { return os.Open(path) }
