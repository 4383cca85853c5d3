package store_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/trove-p2p/trove/chunk"
	"github.com/trove-p2p/trove/nix"
	"github.com/trove-p2p/trove/store"
	"github.com/trove-p2p/trove/store/storetest"
)

// The conformance suite is only worth passing if it fails a store that
// breaks the contract. Each wrapper below breaks one promise of the real
// store; the cases that check that promise must fail against it.

type lyingIsValid struct{ *store.Store }

func (lyingIsValid) IsValid(nix.Path) (bool, error) { return true, nil }

type offByOneWriteNAR struct{ *store.Store }

func (s offByOneWriteNAR) WriteNAR(ctx context.Context, w io.Writer, p nix.Path, off, n int64) error {
	return s.Store.WriteNAR(ctx, w, p, off+1, n)
}

type reversedClosure struct{ *store.Store }

func (s reversedClosure) Closure(roots ...nix.Path) ([]*nix.PathInfo, error) {
	c, err := s.Store.Closure(roots...)
	slices.Reverse(c)
	return c, err
}

type swallowingAddNAR struct{ *store.Store }

func (s swallowingAddNAR) AddNAR(ctx context.Context, info *nix.PathInfo, r io.Reader) (*nix.PathInfo, error) {
	pi, err := s.Store.AddNAR(ctx, info, r)
	if err != nil {
		return info, nil
	}
	return pi, nil
}

type corruptReadChunk struct{ *store.Store }

func (s corruptReadChunk) ReadChunk(ctx context.Context, id chunk.ID, size uint32) ([]byte, error) {
	b, err := s.Store.ReadChunk(ctx, id, size)
	if len(b) > 0 {
		b = slices.Clone(b)
		b[len(b)/2] ^= 1
	}
	return b, err
}

func TestConformanceCatchesBrokenStores(t *testing.T) {
	cases := []struct {
		name  string
		wrap  func(*store.Store) storetest.Store
		catch []string // the suite's cases that must fail
	}{
		{"IsValidLies", func(s *store.Store) storetest.Store { return lyingIsValid{s} },
			[]string{"UnknownPath", "WrongHashChangesNothing", "MissingReferenceRefused"}},
		{"WriteNAROffByOne", func(s *store.Store) storetest.Store { return offByOneWriteNAR{s} },
			[]string{"AddThenRead", "NARRanges", "AddIsIdempotent", "ConcurrentAdds"}},
		{"ClosureReversed", func(s *store.Store) storetest.Store { return reversedClosure{s} },
			[]string{"ClosureOrder"}},
		{"AddNARSwallowsErrors", func(s *store.Store) storetest.Store { return swallowingAddNAR{s} },
			[]string{"WrongHashChangesNothing", "WrongSizeChangesNothing", "TruncatedNARChangesNothing",
				"BadNARChangesNothing", "MissingReferenceRefused", "ContentAddressChecked"}},
		{"ReadChunkCorrupts", func(s *store.Store) storetest.Store { return corruptReadChunk{s} },
			[]string{"Chunks"}},
	}
	suite := map[string]func(testing.TB, storetest.Store){}
	for _, tt := range storetest.Tests() {
		suite[tt.Name] = tt.Fn
	}
	for _, c := range cases {
		for _, name := range c.catch {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				fn := suite[name]
				if fn == nil {
					t.Fatalf("storetest has no case %q", name)
				}
				// The genuine store passes the case through the recorder,
				// so a failure below is the wrapper's doing.
				if msg, failed := runRecorded(t, fn, openStore(t)); failed {
					t.Fatalf("the real store fails %s: %s", name, msg)
				}
				if _, failed := runRecorded(t, fn, c.wrap(openStore(t))); !failed {
					t.Errorf("storetest's %s passes a store broken by %s", name, c.name)
				}
			})
		}
	}
}

func openStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recorder is a testing.TB whose failures are recorded instead of
// failing the test; Fatal and Skip end the case's goroutine as they
// would a test's. Everything else (TempDir, Cleanup) is the real test's.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msg    string
}

func (r *recorder) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failed {
		r.failed, r.msg = true, msg
	}
}

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *recorder) Helper()                   {}
func (r *recorder) Fail()                     { r.fail("Fail") }
func (r *recorder) Error(a ...any)            { r.fail(fmt.Sprint(a...)) }
func (r *recorder) Errorf(f string, a ...any) { r.fail(fmt.Sprintf(f, a...)) }
func (r *recorder) FailNow()                  { r.fail("FailNow"); runtime.Goexit() }
func (r *recorder) Fatal(a ...any)            { r.Error(a...); runtime.Goexit() }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); runtime.Goexit() }
func (r *recorder) SkipNow()                  { r.fail("skipped"); runtime.Goexit() }
func (r *recorder) Skip(a ...any)             { r.SkipNow() }
func (r *recorder) Skipf(string, ...any)      { r.SkipNow() }

// runRecorded runs fn against s and reports whether it failed, and how.
// A skip counts as a failure: it did not show the store conforms.
func runRecorded(t *testing.T, fn func(testing.TB, storetest.Store), s storetest.Store) (string, bool) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r, s)
	}()
	<-done
	return r.msg, r.Failed()
}
