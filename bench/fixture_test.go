package bench

import (
	"context"
	"testing"

	"github.com/trove-p2p/trove/nixtest"
)

func TestBuildFixture(t *testing.T) {
	nixtest.Require(t)
	dir := t.TempDir()
	ctx := context.Background()
	sk, _, err := NixKey(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := BuildFixture(ctx, dir, FixtureSpec{Paths: 12, Bytes: 4 << 20}, sk)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Paths) != 12 || f.NarBytes < 4<<20 {
		t.Fatalf("fixture %+v", f)
	}
	g, err := BuildFixture(ctx, dir, FixtureSpec{Paths: 12, Bytes: 4 << 20, Salt: "v2"}, sk)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range g.Paths {
		for _, q := range f.Paths {
			if p == q {
				t.Fatalf("%s is in both generations: the salt must rename every path", p)
			}
		}
	}
}
