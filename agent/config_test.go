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
		g, err := parseTrust(b)
		if err == nil && g == nil {
			t.Fatal("nil group without error")
		}
	})
}
