package profile

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if home := os.Getenv(switchChildEnv); home != "" {
		switchChild(home)
		return
	}
	os.Exit(m.Run())
}
