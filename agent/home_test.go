package agent

import (
	"strings"
	"testing"
)

func TestDefaultHome(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		euid int
		want string
	}{
		{"root", map[string]string{"XDG_DATA_HOME": "/x", "HOME": "/root"}, 0, "/var/lib/trove"},
		{"xdg", map[string]string{"XDG_DATA_HOME": "/x/data", "HOME": "/home/u"}, 1000, "/x/data/trove"},
		{"relative xdg is ignored", map[string]string{"XDG_DATA_HOME": "data", "HOME": "/home/u"}, 1000, "/home/u/.local/share/trove"},
		{"home", map[string]string{"HOME": "/home/u"}, 1000, "/home/u/.local/share/trove"},
		{"nothing", nil, 1000, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DefaultHome(func(k string) string { return tc.env[k] }, tc.euid)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("DefaultHome = %q, %v; want %q", got, err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "--home") {
				t.Errorf("error %q does not say how to fix it", err)
			}
		})
	}
}
