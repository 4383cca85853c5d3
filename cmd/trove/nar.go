package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/trove-p2p/trove/localapi"
	"github.com/trove-p2p/trove/nix"
)

func newNARCmd(a *app) *cobra.Command {
	return group(&cobra.Command{
		Use:   "nar",
		Short: "Write, hash and unpack NAR archives",
		Long: `Work with NARs (Nix ARchives), the canonical serialization of a file,
directory or symlink that Nix hashes and copies. The NARs trove writes are
byte-identical to those of nix-store --dump, and its hashes equal Nix's.

These commands work on any path on disk and do not touch the trove store.`,
		Example: `  trove nar dump ./src > src.nar
  trove nar hash ./src
  trove nar restore ./src-copy < src.nar`,
	}, newNARDumpCmd(a), newNARHashCmd(a), newNARRestoreCmd(a))
}

func newNARDumpCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "dump PATH",
		Short: "Write the NAR of a file, directory or symlink to standard output",
		Long: `Write the NAR serialization of PATH (a file, directory or symlink, which is
not followed) to standard output, byte for byte what nix-store --dump PATH
writes. Standard output must be a file or a pipe: a NAR is binary.`,
		Example: `  trove nar dump ./src > src.nar
  trove nar dump ./src | sha256sum
  trove nar dump ./src | trove nar restore ./src-copy`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if isTerminal(a.stdout) {
				return usagef("refusing to write a binary NAR to a terminal; redirect standard output to a file or a pipe (trove nar dump %s > out.nar)", args[0])
			}
			w := bufio.NewWriterSize(a.stdout, 256<<10)
			if _, err := nix.DumpNAR(w, args[0]); err != nil {
				return fmt.Errorf("dumping %s: %w", args[0], localapi.BareError(err, args[0]))
			}
			return w.Flush()
		},
	}
}

func newNARHashCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "hash PATH...",
		Short: "Print the NAR hash of files, directories or symlinks",
		Long: `Print the sha256 hash of the NAR serialization of each PATH, one per line, as
Nix writes a narHash: sha256:<nix32>. The part after "sha256:" equals what
nix-hash --type sha256 --base32 PATH prints.`,
		Example: `  trove nar hash ./src
  trove nar hash ./a ./b`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range args {
				h, _, err := nix.HashPath(p)
				if err != nil {
					return fmt.Errorf("hashing %s: %w", p, localapi.BareError(err, p))
				}
				fmt.Fprintln(a.stdout, h)
			}
			return nil
		},
	}
}

func newNARRestoreCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "restore DIR",
		Short: "Unpack a NAR from standard input into a new path",
		Long: `Read a NAR from standard input and unpack it at DIR, which must not exist yet
(it becomes the file, directory or symlink the NAR holds).

trove is stricter than nix-store --restore: it refuses NARs that are not
canonical (unsorted or duplicate entries, trailing bytes, non-zero padding)
and entry names such as "..", "." or names containing "/", because such a NAR
would unpack to a tree whose hash differs from the one that was checked. On
any error nothing is left behind at DIR.`,
		Example: `  trove nar restore ./src-copy < src.nar
  nix-store --dump /nix/store/<hash>-hello | trove nar restore ./hello`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if isTerminal(a.stdin) {
				return usagef("trove nar restore reads a NAR from standard input, which is a terminal; pipe one in (trove nar restore %s < file.nar)", args[0])
			}
			if _, err := os.Lstat(args[0]); err == nil {
				return fmt.Errorf("%s already exists; nar restore unpacks into a new path: remove it or name another", args[0])
			}
			if err := nix.RestoreNAR(bufio.NewReaderSize(a.stdin, 256<<10), args[0]); err != nil {
				return fmt.Errorf("unpacking the NAR on standard input into %s: %w", args[0], err)
			}
			return nil
		},
	}
}
