//go:build !linux

package signer

import "os"

// syncData flushes the appended records (fsync where fdatasync is not available).
func syncData(f *os.File) error { return f.Sync() }
