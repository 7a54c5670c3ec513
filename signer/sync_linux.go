package signer

import (
	"os"
	"syscall"
)

// syncData flushes the appended records. fdatasync suffices for an
// append-only file: it writes the data and the size needed to read it back,
// skipping the timestamp-only metadata that fsync would also journal.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
