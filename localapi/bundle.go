package localapi

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/trove-p2p/trove/bundle"
	"github.com/trove-p2p/trove/nix"
)

// CreateBundleRequest writes the closures of Refs (store paths, or
// configurations NAME[@N]) into one file.
type CreateBundleRequest struct {
	// Output is the file (absolute), or "-": the bytes come back as
	// Output events for standard output.
	Output string   `json:"output"`
	Format string   `json:"format"` // "trove" or "nix-export"
	Refs   []string `json:"refs"`
}

func doCreateBundle(ctx context.Context, e *Env, req CreateBundleRequest, ev func(Event)) (*bundle.CreateReport, error) {
	create := bundle.Create
	switch req.Format {
	case "", "trove":
	case "nix-export":
		create = bundle.CreateNixExport
	default:
		return nil, usagef("--format %q: want trove or nix-export", req.Format)
	}
	s, _, h, err := e.trusted()
	if err != nil {
		return nil, err
	}
	var rep *bundle.CreateReport
	err = writeAtomically(req.Output, eventWriter{ev, 1}, func(w io.Writer) error {
		var err error
		rep, err = create(ctx, w, s, h, req.Refs)
		return err
	})
	return rep, err
}

// writeAtomically writes file through fn: into a temporary file beside
// it, synced and renamed into place only when complete. "-" is stdout.
func writeAtomically(file string, stdout io.Writer, fn func(io.Writer) error) error {
	if file == "-" {
		return fn(stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := fn(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// ImportBundleRequest imports the bundle File (absolute).
type ImportBundleRequest struct {
	File        string `json:"file"`
	Shown       string `json:"shown"` // File as the user wrote it, for messages
	NoCheckSigs bool   `json:"noCheckSigs,omitempty"`
	// Stdin is read instead of File when File is "-"; only in-process.
	Stdin io.Reader `json:"-"`
}

func doImportBundle(ctx context.Context, e *Env, req ImportBundleRequest, ev func(Event)) (*bundle.Report, error) {
	in := req.Stdin
	if req.File != "-" {
		f, err := os.Open(req.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", req.Shown, BareError(err, req.File))
		}
		defer f.Close()
		in = f
	} else if in == nil {
		return nil, usagef("a running agent cannot read your standard input: give the bundle as a file")
	}
	s, keys, h, err := e.trusted()
	if err != nil {
		return nil, err
	}
	opts := bundle.ImportOptions{NoCheckSigs: req.NoCheckSigs, Logger: e.Log,
		Progress: func(pi *nix.PathInfo, added bool) {
			if added {
				ev(Event{Imported: &ImportedPath{Path: pi.Path.Abs(s.StoreDir()), NarSize: pi.NarSize}})
			}
		}}
	return bundle.Import(ctx, in, s, keys, h, opts)
}
