package nixdaemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/trove-p2p/trove/nix"
)

// FuzzReply plays arbitrary bytes as the daemon's side of a connection
// through the handshake and a fixed run of operations (replyOps). The
// property: no panic, no hang, bounded allocation, and any error other
// than a proper answer (DaemonError, ErrNotValid, ErrHashMismatch) closes
// the Client. Seeds are real daemon replies captured by
// `go test ./nixdaemon -run TestCaptureReplies -update-corpus` into
// testdata/replies, plus synthetic ones with every log message type.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the captured daemon replies in testdata/replies")

// seedPath is the path replyOps asks about: the source path of seedTree.
var seedPath = mustSeedPath()

func mustSeedPath() nix.Path {
	p, err := nix.ParseBase("lba977y0n66s1dqyfy7xpy4ibazs5jkv-seed")
	if err != nil {
		panic(err)
	}
	return p
}

var seedTree = tree{"f": "fuzz seed\n", "d/x": "!exec\n", "l": "@f"}

// replyOps runs the operations whose replies FuzzReply fuzzes.
func replyOps(ctx context.Context, c *Client) []error {
	_, e1 := c.IsValidPath(ctx, seedPath)
	_, e2 := c.QueryPathInfo(ctx, seedPath)
	_, e3 := c.QueryPathInfo(ctx, ghost)
	_, e4 := c.QueryAllValidPaths(ctx)
	_, e5 := c.QueryValidPaths(ctx, []nix.Path{seedPath, ghost})
	_, e6 := c.QueryPathFromHashPart(ctx, seedPath.Hash)
	e7 := c.NarFromPath(ctx, seedPath, io.Discard)
	e8 := c.AddTempRoot(ctx, seedPath)
	return []error{e1, e2, e3, e4, e5, e6, e7, e8}
}

// answer reports whether err is a proper answer that leaves the
// connection usable.
func answer(err error) bool {
	var de *DaemonError
	return err == nil || errors.As(err, &de) || errors.Is(err, nix.ErrNotValid) || errors.Is(err, nix.ErrHashMismatch)
}

func FuzzReply(f *testing.F) {
	files, _ := filepath.Glob("testdata/replies/*.bin")
	for _, name := range files {
		var minor uint8
		if _, err := fmt.Sscanf(filepath.Base(name), "1.%d", &minor); err != nil {
			f.Fatalf("%s: name it 1.<minor>-….bin", name)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(minor, b)
	}
	for _, minor := range []uint8{34, 25} {
		f.Add(minor, syntheticReply(minor))
	}
	f.Fuzz(func(t *testing.T, minor uint8, data []byte) {
		cli, srv := net.Pipe()
		go io.Copy(io.Discard, srv)
		go func() {
			srv.Write(data)
			srv.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := newClient(ctx, cli, cli, cli, Options{version: 1<<8 | int(minor)})
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("handshake hung")
			}
			return
		}
		defer c.Close()
		closed := false
		for i, err := range replyOps(ctx, c) {
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("op %d hung", i)
			case closed && !errors.Is(err, ErrClosed):
				t.Fatalf("op %d after a failure: %v; want ErrClosed", i, err)
			case !answer(err):
				closed = true
			}
		}
	})
}

// syntheticReply is a handshake and replies to replyOps carrying every log
// message type and a daemon error.
func syntheticReply(minor uint8) []byte {
	var b bytes.Buffer
	w := &writer{w: bufio.NewWriter(&b)}
	w.u64(workerMagic2)
	w.u64(1<<8 | uint64(minor))
	if minor >= 33 {
		w.str("2.8.0")
	}
	logs := func() {
		w.u64(stderrNext)
		w.str("\x1b[31;1mwarning:\x1b[0m something\n")
		w.u64(stderrStartActivity)
		w.u64(7)
		w.u64(3)
		w.u64(100)
		w.str("copying path")
		w.u64(2)
		w.u64(0)
		w.u64(42)
		w.u64(1)
		w.str("field")
		w.u64(0)
		w.u64(stderrResult)
		w.u64(7)
		w.u64(105)
		w.u64(1)
		w.u64(0)
		w.u64(1)
		w.u64(stderrStopActivity)
		w.u64(7)
	}
	fail := func(msg string) {
		w.u64(stderrError)
		if minor >= 26 {
			w.str("Error")
			w.u64(0)
			w.str("Error")
			w.str(msg)
			w.u64(0)
			w.u64(1)
			w.u64(0)
			w.str("while doing something")
		} else {
			w.str(msg)
			w.u64(1)
		}
	}
	logs()
	w.u64(stderrLast) // handshake
	logs()
	w.u64(stderrLast)
	w.u64(1)                                                  // IsValidPath
	fail("path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid") // QueryPathInfo
	logs()
	w.u64(stderrLast)
	w.u64(0) // QueryPathInfo(ghost): not valid
	w.u64(stderrLast)
	w.strs([]string{seedPath.Abs(storeDir), ghost.Abs(storeDir)}) // QueryAllValidPaths
	w.u64(stderrLast)
	w.strs([]string{seedPath.Abs(storeDir)}) // QueryValidPaths
	w.u64(stderrLast)
	w.str(seedPath.Abs(storeDir)) // QueryPathFromHashPart
	w.u64(stderrLast)             // NarFromPath: QueryPathInfo
	w.u64(1)
	w.str("")
	w.str(nix.Hash{}.Hex())
	w.strs(nil)
	w.u64(1_700_000_000)
	w.u64(112)
	w.u64(0)
	w.strs(nil)
	w.str("")
	w.u64(stderrLast) // NarFromPath
	w.str("nix-archive-1")
	for _, s := range []string{"(", "type", "regular", "contents", "hi", ")"} {
		w.str(s)
	}
	w.u64(stderrLast)
	w.u64(1) // AddTempRoot
	w.flush()
	return b.Bytes()
}

// TestCaptureReplies runs replyOps against a real daemon, where each
// succeeds, and with -update-corpus saves what the daemon sent as seeds
// for FuzzReply.
func TestCaptureReplies(t *testing.T) {
	s := newTestStore(t)
	info, nar := sourceInfo(t, seedTree.write(t), "seed", nil)
	if info.Path != seedPath {
		t.Fatalf("seed tree has path %s, seedPath is %s", info.Path, seedPath)
	}
	if err := add(context.Background(), s.client(t, Options{}), info, nar, true); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			cmd := exec.Command("nix-daemon", "--stdio", "--store", s.uri)
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			var got bytes.Buffer
			ctx := context.Background()
			c, err := newClient(ctx, io.TeeReader(out, &got), in, in, Options{version: v.version, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i, err := range replyOps(ctx, c) {
				if err != nil && !(i == 2 && errors.Is(err, nix.ErrNotValid)) {
					t.Errorf("op %d: %v", i, err)
				}
			}
			if *updateCorpus {
				_, minor := c.Version()
				if err := os.MkdirAll("testdata/replies", 0o755); err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("testdata/replies/1.%d-nix-2.8.bin", minor)
				if err := os.WriteFile(name, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
