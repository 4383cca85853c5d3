package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether v is a file open on a terminal.
func isTerminal(v any) bool {
	f, ok := v.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// writeJSON prints v as one line of compact JSON, as Nix does, without
// HTML escaping.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeList prints a listing: one item a line, or with asJSON a JSON array.
func writeList(w io.Writer, asJSON bool, items []string) error {
	if asJSON {
		return writeJSON(w, items)
	}
	for _, it := range items {
		fmt.Fprintln(w, it)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// bareError strips the operation and path from an *fs.PathError about
// path itself, for messages that already name it: "no such file or
// directory". Errors about other files (inside a tree) keep their path.
func bareError(err error, path string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && filepath.Clean(pe.Path) == filepath.Clean(path) {
		return pe.Err
	}
	return err
}

// humanBytes renders a byte count for people: "512 B", "1.5 MiB".
func humanBytes(n uint64) string { return humanize.IBytes(n) }
