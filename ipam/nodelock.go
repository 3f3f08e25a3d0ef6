package ipam

import (
	"errors"

	"golang.org/x/sys/unix"
)

// nodeLock is the node-local queue's lock: flock(2) on a file, so the
// kernel releases it when its holder exits, however it exits (kill -9
// included), and nothing is ever left locked. It is only ever tried
// (LOCK_NB): a waiter is told when to try (nodequeue.go), so no process
// sits in the kernel's queue for a lock it no longer needs.
type nodeLock struct {
	fd     int
	closed bool
}

func openNodeLock(path string) (*nodeLock, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return &nodeLock{fd: fd}, nil
}

// try takes the lock if it is free.
func (l *nodeLock) try() bool {
	return flock(l.fd, unix.LOCK_EX|unix.LOCK_NB) == nil
}

func (l *nodeLock) unlock() { _ = flock(l.fd, unix.LOCK_UN) }

// close releases the lock (if held) and the descriptor.
func (l *nodeLock) close() {
	if !l.closed {
		l.closed = true
		_ = unix.Close(l.fd)
	}
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
