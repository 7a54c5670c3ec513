//go:build !linux

package core

// syncFS is a no-op where syncfs(2) is missing: the renames stay atomic,
// only crash durability of the new files is left to the OS.
func syncFS(string) error { return nil }
