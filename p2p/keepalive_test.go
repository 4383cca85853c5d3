package p2p

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// forgetfulNAT forwards one TCP connection between a dialler and target
// until forget is called; from then on, like a NAT that forgot its
// mapping in front of a peer that resets what it does not know, it drops
// what target sends and resets the dialler's side on its next byte.
type forgetfulNAT struct {
	ln     net.Listener
	forgot atomic.Bool
}

func newForgetfulNAT(t *testing.T, target string) *forgetfulNAT {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &forgetfulNAT{ln: ln}
	go func() {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			return
		}
		t.Cleanup(func() { in.Close(); out.Close() })
		go func() { // target → dialler, until forgotten
			buf := make([]byte, 32<<10)
			for {
				n, err := out.Read(buf)
				if err != nil {
					return
				}
				if !f.forgot.Load() {
					in.Write(buf[:n])
				}
			}
		}()
		buf := make([]byte, 32<<10)
		for { // dialler → target; after forget, a reset
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			if f.forgot.Load() {
				in.(*net.TCPConn).SetLinger(0)
				in.Close()
				return
			}
			out.Write(buf[:n])
		}
	}()
	return f
}

func (f *forgetfulNAT) addr(t *testing.T) ma.Multiaddr {
	a, err := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/" + strconv.Itoa(f.ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestKeepAliveFindsAForgottenMapping: a node with nothing to send on a
// connection whose NAT mapping is gone learns it within seconds (its
// keepalive ping draws the reset), not only when it next has something to
// say, nor after yamux's default of 30 s.
func TestKeepAliveFindsAForgottenMapping(t *testing.T) {
	ta, tb := NewTrustGroup(nil), NewTrustGroup(nil)
	a, _ := testNode(t, ta)
	b, _ := testNode(t, tb)
	pair(a, b, ta, tb)
	var target string
	for _, x := range b.host.Addrs() {
		if port, err := x.ValueForProtocol(ma.P_TCP); err == nil {
			target = "127.0.0.1:" + port
		}
	}
	nat := newForgetfulNAT(t, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.host.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{nat.addr(t)}}); err != nil {
		t.Fatal(err)
	}
	conns := a.host.Network().ConnsToPeer(b.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections to b, want 1", len(conns))
	}
	c := conns[0]
	time.Sleep(500 * time.Millisecond) // identify and the like are done
	nat.forgot.Store(true)
	forgot := time.Now()
	for !c.IsClosed() {
		if time.Since(forgot) > 7*time.Second {
			t.Fatalf("the connection through the forgetful NAT still looks open %v after it forgot", time.Since(forgot).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a learned its connection was gone %v after the NAT forgot it", time.Since(forgot).Round(time.Millisecond))
}
