package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The queue's files, under NodeLocal.Dir:
//
//	lock          flock(2) held by the process making the transaction
//	state         what the last transaction read and wrote (nodestate.go)
//	queue/ID.req  a waiting request, flock(2)ed by its process while it waits
//	wait/ID/      the waiting process's mailbox, which it watches (inotify):
//	  res         its outcome, written by whoever made the transaction
//	  turn        "the lock is free and you are next", from the last holder
//
// Files are written under a temporary name and renamed into place, so a
// reader never sees half a file.
const (
	queueDir  = "queue"
	waitDir   = "wait"
	tmpPrefix = ".tmp-"
	// staleAfter is when leftovers of killed processes (temporary files,
	// mailboxes nobody emptied) are removed.
	staleAfter = time.Minute
)

// queuedRequest is a request file.
type queuedRequest struct {
	V        int       `json:"v"`
	Deadline time.Time `json:"deadline"`
	Req      request   `json:"req"`
}

// queuedResult is a result file.
type queuedResult struct {
	V     int          `json:"v"`
	Addrs []HandleAddr `json:"addrs,omitempty"`
	Err   string       `json:"error,omitempty"`
	// Kind says which error it is, so the waiter returns one that
	// errors.Is tells apart as the holder's would be (see errorKinds).
	Kind string `json:"kind,omitempty"`
	// Retry marks a failure of the whole transaction (etcd unreachable,
	// the holder's deadline): the waiter tries again itself if it has time.
	Retry bool `json:"retry,omitempty"`
}

var errorKinds = map[string]error{
	"unreachable": ErrUnreachable,
	"exhausted":   ErrExhausted,
	"nopool":      ErrNoPool,
	"stale":       ErrStaleSeq,
	"busy":        ErrNodeBusy,
}

// remoteError is an error made in another process, with its kind.
type remoteError struct {
	msg  string
	kind error
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.kind }

func resultOf(p *pending, batchErr error) queuedResult {
	r := queuedResult{V: 1, Addrs: p.out}
	err := p.err
	if batchErr != nil {
		err, r.Retry = batchErr, true
	}
	if err != nil {
		r.Err = err.Error()
		for k, sentinel := range errorKinds {
			if errors.Is(err, sentinel) {
				r.Kind = k
			}
		}
	}
	return r
}

func (r queuedResult) err() error {
	if r.Err == "" {
		return nil
	}
	return remoteError{msg: r.Err, kind: errorKinds[r.Kind]}
}

// waiter is this process's entry in the queue.
type waiter struct {
	id   string
	fd   int // the request file, locked while we wait
	path string
	box  string // the mailbox directory
	// events is signalled when something is put in the mailbox.
	events chan struct{}
	watch  *os.File
}

// enqueue makes and watches the mailbox, then writes the request file.
func (l *NodeLocal) enqueue(p *pending, deadline time.Time) (*waiter, error) {
	id := fmt.Sprintf("%020d-%d-%08x", time.Now().UnixNano(), os.Getpid(), rand.Uint32())
	w := &waiter{id: id, fd: -1, path: filepath.Join(l.Dir, queueDir, id+".req"), box: filepath.Join(l.Dir, waitDir, id),
		events: make(chan struct{}, 1)}
	if err := os.Mkdir(w.box, 0o700); err != nil {
		return nil, err
	}
	if err := w.watchBox(); err != nil {
		// No inotify instance to be had: fs.inotify.max_user_instances
		// (128 by default) counts every process of the user, and on a
		// node kubelet, containerd and their kin hold many. The waiter
		// keeps its place in the queue (the holder batches it as any
		// other) and polls its mailbox instead (queueFastPoll).
		w.watch = nil
	}
	b, _ := json.Marshal(queuedRequest{V: 1, Deadline: deadline.UTC(), Req: p.req})
	tmp := filepath.Join(l.Dir, queueDir, tmpPrefix+id)
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		w.close()
		return nil, err
	}
	w.fd = fd
	// Locked before it is visible: a holder that can lock a request file
	// knows its process is gone.
	if err := flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = os.Remove(tmp)
		w.close()
		return nil, err
	}
	if _, err := unix.Write(fd, b); err != nil {
		_ = os.Remove(tmp)
		w.close()
		return nil, err
	}
	if err := os.Rename(tmp, w.path); err != nil {
		_ = os.Remove(tmp)
		w.close()
		return nil, err
	}
	return w, nil
}

// inotifyInit is unix.InotifyInit1; tests make it fail.
var inotifyInit = unix.InotifyInit1

// watchBox signals w.events whenever a file is renamed into the mailbox.
// The inotify descriptor is non-blocking and read through the runtime's
// poller, so close ends the reader.
func (w *waiter) watchBox() error {
	fd, err := inotifyInit(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	if _, err := unix.InotifyAddWatch(fd, w.box, unix.IN_MOVED_TO); err != nil {
		_ = unix.Close(fd)
		return err
	}
	w.watch = os.NewFile(uintptr(fd), "inotify")
	go func() {
		buf := make([]byte, 16*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			if _, err := w.watch.Read(buf); err != nil {
				return
			}
			select {
			case w.events <- struct{}{}:
			default:
			}
		}
	}()
	return nil
}

// result reads w's result, if there is one.
func (w *waiter) result() (queuedResult, bool) {
	b, err := os.ReadFile(filepath.Join(w.box, "res"))
	if err != nil {
		return queuedResult{}, false
	}
	var r queuedResult
	if json.Unmarshal(b, &r) != nil {
		return queuedResult{}, false
	}
	return r, true
}

// clearResult removes a result that asked the waiter to try again.
func (w *waiter) clearResult() { _ = os.Remove(filepath.Join(w.box, "res")) }

// withdraw removes w's request from the queue, so that no holder takes it
// into a transaction or passes it the turn: for a waiter that has become
// the holder itself, before it makes its transaction (the request would
// otherwise be seen, still locked and unanswered, by the next holder in the
// moment between this one's unlock and its close, and made a second time).
func (w *waiter) withdraw() { _ = os.Remove(w.path) }

// close removes w's files and gives up its place.
func (w *waiter) close() {
	if w.watch != nil {
		_ = w.watch.Close()
	}
	w.withdraw()
	// A holder may be delivering into the mailbox as it goes (a turn passed
	// just before the request was withdrawn): a file created after
	// RemoveAll listed the directory makes its rmdir fail (ENOTEMPTY), so
	// it tries again. Once the directory is gone, a delivery fails.
	for range 10 {
		if err := os.RemoveAll(w.box); err == nil {
			break
		}
	}
	if w.fd >= 0 {
		_ = unix.Close(w.fd)
		w.fd = -1
	}
}

// queued is a request another process is waiting on.
type queued struct {
	id string
	p  *pending
}

// scan returns up to max requests of live processes, oldest first, that
// have no result yet and whose handles are not in taken, and the oldest
// live request left waiting after those (next, "" if none); it removes
// what killed processes left behind.
func (l *NodeLocal) scan(max int, taken map[string]bool, own string) (out []queued, next string) {
	qdir, wdir := filepath.Join(l.Dir, queueDir), filepath.Join(l.Dir, waitDir)
	now := time.Now()
	entries, err := os.ReadDir(qdir) // sorted by name: by time of arrival
	if err != nil {
		return nil, ""
	}
	live := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(qdir, name)
		if strings.HasPrefix(name, tmpPrefix) {
			if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > staleAfter {
				_ = os.Remove(path)
			}
			continue
		}
		id, ok := strings.CutSuffix(name, ".req")
		if !ok || id == own {
			live[id] = ok
			continue
		}
		if !waiting(path) {
			// Its process is gone (killed): nobody will collect an answer.
			_ = os.Remove(path)
			_ = os.RemoveAll(filepath.Join(wdir, id))
			continue
		}
		live[id] = true
		if _, err := os.Stat(filepath.Join(wdir, id, "res")); err == nil {
			continue // answered; its process is collecting it
		}
		if len(out) >= max {
			if next == "" {
				next = id
			}
			continue
		}
		q, ok := readRequest(path)
		if !ok || now.After(q.Deadline) {
			continue // unreadable, or its process is giving up
		}
		h := q.Req.handle()
		if taken[h] || (q.Req.Assign != nil && q.Req.Assign.Node != l.Node) {
			if next == "" {
				next = id // the next transaction takes it
			}
			continue
		}
		p := &pending{req: q.Req}
		if q.Req.Assign != nil {
			np, err := newAssign(*q.Req.Assign)
			if err != nil {
				continue // its own process refuses it before queueing; never here
			}
			p = np
		}
		taken[h] = true
		out = append(out, queued{id: id, p: p})
	}
	// Mailboxes whose request is gone and that nobody removed: a process
	// killed between the two removals.
	if boxes, err := os.ReadDir(wdir); err == nil {
		for _, b := range boxes {
			if info, err := b.Info(); err == nil && !live[b.Name()] && now.Sub(info.ModTime()) > staleAfter {
				_ = os.RemoveAll(filepath.Join(wdir, b.Name()))
			}
		}
	}
	return out, next
}

// nextWaiting is the oldest request without a result, other than own's:
// the process to pass the turn to when the lock is released.
func (l *NodeLocal) nextWaiting(own string) string {
	entries, err := os.ReadDir(filepath.Join(l.Dir, queueDir))
	if err != nil {
		return ""
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".req")
		if !ok || id == own || strings.HasPrefix(id, tmpPrefix) {
			continue
		}
		if _, err := os.Stat(filepath.Join(l.Dir, waitDir, id, "res")); err != nil {
			return id
		}
	}
	return ""
}

// waiting reports whether the process of a request file still waits: it
// holds the file's lock for as long as it does, and the kernel drops the
// lock when the process dies.
func waiting(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil
}

// readRequest reads a request file.
func readRequest(path string) (queuedRequest, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return queuedRequest{}, false
	}
	var q queuedRequest
	return q, json.Unmarshal(b, &q) == nil
}

// answer writes the result of request id into its mailbox.
func (l *NodeLocal) answer(id string, r queuedResult) error {
	b, _ := json.Marshal(r)
	return l.deliver(id, "res", b)
}

// passTurn tells the waiter id that the lock is free and its turn has come.
func (l *NodeLocal) passTurn(id string) { _ = l.deliver(id, "turn", nil) }

func (l *NodeLocal) deliver(id, name string, b []byte) error {
	box := filepath.Join(l.Dir, waitDir, id)
	tmp := filepath.Join(box, tmpPrefix+name)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(box, name))
}
