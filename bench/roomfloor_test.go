package bench

import (
	"slices"
	"testing"
	"time"
)

func TestRoomFloorSpecArgs(t *testing.T) {
	want := RoomFloorSpec{Index: 3, Addrs: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}, Size: 1 << 27,
		Start: time.Unix(0, 1796322283152300313), Dir: "/tmp/a3"}
	args := want.Args()
	if args[0] != "bench" || args[1] != "room-floor-node" {
		t.Fatalf("args %q do not run the hidden command", args)
	}
	got, err := ParseRoomFloorSpec(args[2:])
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != want.Index || !slices.Equal(got.Addrs, want.Addrs) || got.Size != want.Size || !got.Start.Equal(want.Start) || got.Dir != want.Dir {
		t.Errorf("round trip: got %+v, want %+v", got, want)
	}
	for _, bad := range [][]string{
		nil,
		{"1", "a,b", "100", "0"},
		{"x", "a,b", "100", "0", "/d"},
		{"2", "a,b", "100", "0", "/d"},
		{"-1", "a,b", "100", "0", "/d"},
		{"0", "a", "100", "0", "/d"},
		{"1", "10.0.0.1,10.0.0.2,10.0.0.3", "1", "0", "/d"},
		{"1", "10.0.0.1,b", "100", "0", "/d"},
		{"1", "10.0.0.1,::1", "100", "0", "/d"},
		{"1", "10.0.0.1,10.0.0.2", "ten", "0", "/d"},
		{"1", "10.0.0.1,10.0.0.2", "100", "soon", "/d"},
	} {
		if _, err := ParseRoomFloorSpec(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestRoomFloorParts: the followers' parts cover the bytes exactly.
func TestRoomFloorParts(t *testing.T) {
	for _, c := range []struct {
		size int64
		n    int
	}{{1 << 27, 16}, {1<<27 + 15, 16}, {7, 1}, {100, 3}} {
		var sum int64
		for i := 1; i <= c.n; i++ {
			sum += roomFloorPart(c.size, i, c.n)
		}
		if sum != c.size {
			t.Errorf("size %d in %d parts: parts sum to %d", c.size, c.n, sum)
		}
	}
}

func FuzzParseRoomFloorSpec(f *testing.F) {
	f.Add("1", "10.0.0.1,10.0.0.2", "1000", "1796322283152300313", "/tmp/x")
	f.Add("0", "a,b,c", "3", "-5", "")
	f.Fuzz(func(t *testing.T, index, addrs, size, start, dir string) {
		s, err := ParseRoomFloorSpec([]string{index, addrs, size, start, dir})
		if err != nil {
			return
		}
		if len(s.Addrs) < 2 || s.Index < 0 || s.Index >= len(s.Addrs) || s.Size < int64(len(s.Addrs)-1) {
			t.Fatalf("accepted a spec it cannot run: %+v", s)
		}
		again, err := ParseRoomFloorSpec(s.Args()[2:])
		if err != nil || again.Index != s.Index || again.Size != s.Size || !slices.Equal(again.Addrs, s.Addrs) ||
			!again.Start.Equal(s.Start) || again.Dir != s.Dir {
			t.Fatalf("round trip of %+v: %+v, %v", s, again, err)
		}
	})
}
