package agent

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"empty", "", ""},
		{"full", `[agent]
listen = ["/ip4/0.0.0.0/tcp/4807"]
peers = ["/ip4/10.0.0.2/tcp/4807/p2p/12D3KooWGRUVh7dPpXwHmXhHJtJZmPoFgLDbfRPD2Jn9nQoMnKDS"]
mdns = false
dht = true
bootstrap = []
serve = "public"
log_format = "json"
timeout = "90s"
`, ""},
		{"unknown key", "[agent]\nlisten_on = []\n", "unknown setting agent.listen_on"},
		{"unknown table", "[agnet]\nmdns = true\n", "unknown setting"},
		{"bad serve", "[agent]\nserve = \"everyone\"\n", `want "trusted" or "public"`},
		{"bad log format", "[agent]\nlog_format = \"xml\"\n", "log_format"},
		{"bad timeout", "[agent]\ntimeout = \"ten minutes\"\n", "agent.timeout"},
		{"zero timeout", "[agent]\ntimeout = \"0s\"\n", "above zero"},
		{"wrong type", "[agent]\nmdns = \"yes\"\n", "mdns"},
		{"not toml", "[agent\n", "expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.name == "full" && (*c.Agent.DHT != true || *c.Agent.MDNS != false || c.Agent.Serve != "public" || c.Agent.ActivationTimeout() != 90*time.Second) {
					t.Fatalf("parsed %+v", c.Agent)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("[agent]\nlisten = [\"/ip4/0.0.0.0/tcp/4807\"]\nmdns = true\n"))
	f.Add([]byte("[agent]\nserve = \"public\"\n"))
	f.Add([]byte("[agent\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

func FuzzParseTrust(f *testing.F) {
	f.Add([]byte(`{"peers":[{"id":"12D3KooWGRUVh7dPpXwHmXhHJtJZmPoFgLDbfRPD2Jn9nQoMnKDS","name":"laptop"}]}`))
	f.Add([]byte(`{"peers":[{"id":"nope"}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := parseMembers(b, "")
		if err == nil && g == nil {
			t.Fatal("nil group without error")
		}
	})
}

func TestMergeSettings(t *testing.T) {
	no := func(string) bool { return false }
	c, err := ParseConfig([]byte(`[agent]
listen = ["/ip4/0.0.0.0/tcp/5000"]
peers = ["/ip4/10.0.0.2/tcp/4807/p2p/X"]
mdns = false
dht = true
serve = "public"
log_format = "json"
`))
	if err != nil {
		t.Fatal(err)
	}
	// The file over the defaults.
	s, err := c.Merge(DefaultSettings(), no)
	if err != nil {
		t.Fatal(err)
	}
	if s.Listen[0] != "/ip4/0.0.0.0/tcp/5000" || s.MDNS || !s.DHT || s.Serve != "public" || s.LogFormat != "json" || len(s.Peers) != 1 {
		t.Fatalf("file over defaults: %+v", s)
	}
	// Flags that were set over the file; peers add up.
	flags := DefaultSettings()
	flags.Listen, flags.MDNS, flags.Serve, flags.Peers = []string{"/ip4/127.0.0.1/tcp/0"}, true, "trusted", []string{"/p2p/Y"}
	set := func(f string) bool { return f == "listen" || f == "mdns" || f == "serve" }
	s, err = c.Merge(flags, set)
	if err != nil {
		t.Fatal(err)
	}
	if s.Listen[0] != "/ip4/127.0.0.1/tcp/0" || !s.MDNS || !s.DHT || s.Serve != "trusted" || len(s.Peers) != 2 {
		t.Fatalf("flags over file: %+v", s)
	}
	// No file: the defaults, the same for an agent and a short-lived node.
	s, err = (&FileConfig{}).Merge(DefaultSettings(), no)
	if err != nil || !s.MDNS || s.DHT || s.Serve != "trusted" || len(s.Listen) == 0 {
		t.Fatalf("defaults: %+v %v", s, err)
	}
	flags.Serve = "everyone"
	if _, err := (&FileConfig{}).Merge(flags, set); err == nil || !strings.Contains(err.Error(), "want trusted or public") {
		t.Fatalf("bad serve: %v", err)
	}
}
