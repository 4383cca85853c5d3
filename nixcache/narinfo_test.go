package nixcache

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/trove-p2p/trove/nix"
)

// midNarInfo is what `nix copy --to file://...?compression=xz` wrote for the
// fixture's p2p-mid (docs/reference/nix.md §3), plus a signature by the
// reference's test key.
const midNarInfo = `StorePath: /nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid
URL: nar/06lb1ryxy2l2vz42nn0h7dklpf3d2k9dmrf444yvydqn65nx7p3x.nar.xz
Compression: xz
FileHash: sha256:06lb1ryxy2l2vz42nn0h7dklpf3d2k9dmrf444yvydqn65nx7p3x
FileSize: 188
NarHash: sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl
NarSize: 184
References: hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf
Deriver: ihia7x5mpm6qspz28n6ry6444iwpy10v-p2p-mid.drv
Sig: test-cache-1:QaQd7LdrNwh27qfqiVv/zPdTtuK4W6EAo57wFwwJzPKMZo+4g5YUxs0dWfd3BfZiRzFsH8SQnpB4vCay4IyFCA==
`

const leafNarInfo = `StorePath: /nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf
URL: nar/0kj79h75b5z8asfcxjxj0ysrdmgggv74zxkmja7z1g1jkiv9ny3k.nar
Compression: none
NarHash: sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg
NarSize: 128
References: 
`

func TestParseNarInfo(t *testing.T) {
	ni, err := ParseNarInfo(nix.DefaultStoreDir, []byte(midNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	if ni.Info.Path.String() != "f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid" || ni.Compression != "xz" || ni.FileSize != 188 ||
		ni.Info.NarSize != 184 || ni.Info.NarHash.String() != "sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl" ||
		len(ni.Info.References) != 1 || ni.Info.References[0].Name != "p2p-leaf" ||
		ni.Info.Deriver.String() != "ihia7x5mpm6qspz28n6ry6444iwpy10v-p2p-mid.drv" || len(ni.Info.Sigs) != 1 {
		t.Fatalf("parsed %+v", ni)
	}
	// The signature is the reference's test vector over this path's fingerprint.
	want := "1;/nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid;sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl;184;/nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf"
	if got := ni.Info.Fingerprint(nix.DefaultStoreDir); got != want {
		t.Fatalf("fingerprint %q", got)
	}
	if got := string(ni.Encode(nix.DefaultStoreDir)); got != midNarInfo {
		t.Fatalf("Encode:\n%s\nwant\n%s", got, midNarInfo)
	}

	leaf, err := ParseNarInfo(nix.DefaultStoreDir, []byte(leafNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Info.References != nil || !leaf.Info.Deriver.IsZero() || leaf.FileSize != 0 {
		t.Fatalf("leaf %+v", leaf)
	}
	// Compression absent means bzip2; a missing final newline (as in the
	// nix-cache-info Nix writes) is fine; unknown fields are ignored.
	ni, err = ParseNarInfo(nix.DefaultStoreDir, []byte(strings.ReplaceAll(strings.TrimSuffix(leafNarInfo, "\n"), "Compression: none\n", "Future: thing\n")))
	if err != nil || ni.Compression != "bzip2" {
		t.Fatalf("%+v %v", ni, err)
	}
}

// TestParseNarInfoRefuses lists malformed narinfos, each with what its
// error must say.
func TestParseNarInfoRefuses(t *testing.T) {
	// edit replaces the line of leafNarInfo starting with key (or adds one).
	edit := func(key, line string) string {
		var out []string
		found := false
		for _, l := range strings.Split(strings.TrimSuffix(leafNarInfo, "\n"), "\n") {
			if strings.HasPrefix(l, key+":") {
				found = true
				if line != "" {
					out = append(out, line)
				}
				continue
			}
			out = append(out, l)
		}
		if !found {
			out = append(out, line)
		}
		return strings.Join(out, "\n") + "\n"
	}
	sig := "k:" + strings.Repeat("A", 86) + "=="
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"no StorePath", edit("StorePath", ""), "no StorePath"},
		{"no URL", edit("URL", ""), "no URL"},
		{"no NarHash", edit("NarHash", ""), "no NarHash"},
		{"no NarSize", edit("NarSize", ""), "no NarSize"},
		{"StorePath outside the store", edit("StorePath", "StorePath: /tmp/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf"), "StorePath"},
		{"StorePath below a path", edit("StorePath", "StorePath: /nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf/bin"), "StorePath"},
		{"StorePath bad hash", edit("StorePath", "StorePath: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-p2p-leaf"), "StorePath"},
		{"StorePath bad name", edit("StorePath", "StorePath: /nix/store/hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-a b"), "StorePath"},
		{"NarSize zero", edit("NarSize", "NarSize: 0"), "never empty"},
		{"NarSize negative", edit("NarSize", "NarSize: -1"), "decimal"},
		{"NarSize signed", edit("NarSize", "NarSize: +128"), "decimal"},
		{"NarSize leading zero", edit("NarSize", "NarSize: 0128"), "decimal"},
		{"NarSize hex", edit("NarSize", "NarSize: 0x80"), "decimal"},
		{"NarSize too big", edit("NarSize", "NarSize: 18446744073709551616"), "too large"},
		{"NarSize with space", edit("NarSize", "NarSize: 128 "), "decimal"},
		{"NarHash without algorithm", edit("NarHash", "NarHash: 01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg"), "NarHash"},
		{"NarHash md5", edit("NarHash", "NarHash: md5:01q6czwzsqwpkfp82cm87f8vkq"), "NarHash"},
		{"NarHash short", edit("NarHash", "NarHash: sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifpp"), "NarHash"},
		{"NarHash bad char", edit("NarHash", "NarHash: sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppe"), "NarHash"},
		{"FileHash garbage", edit("FileHash", "FileHash: sha256:zz"), "FileHash"},
		{"FileSize garbage", edit("FileSize", "FileSize: many"), "FileSize"},
		{"uncompressed FileHash differs", edit("FileHash", "FileHash: sha256:0kj79h75b5z8asfcxjxj0ysrdmgggv74zxkmja7z1g1jkiv9ny3k"), "differs from NarHash"},
		{"uncompressed FileSize differs", edit("FileSize", "FileSize: 127"), "differs from NarSize"},
		{"Compression unknown", edit("Compression", "Compression: rar"), "want one of"},
		{"Compression empty", edit("Compression", "Compression: "), "want one of"},
		{"References double space", edit("References", "References: f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid  hrdkgfp4x4irj4w3rvhcpsjjsm8x4g8h-p2p-leaf"), "single spaces"},
		{"References full path", edit("References", "References: /nix/store/f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid"), "References"},
		{"References twice", edit("References", "References: f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid f490gj5rij0117sd7n0nynkij1a0gmjv-p2p-mid"), "twice"},
		{"Deriver empty", edit("Deriver", "Deriver: "), "Deriver"},
		{"Deriver full path", edit("Deriver", "Deriver: /nix/store/ihia7x5mpm6qspz28n6ry6444iwpy10v-p2p-mid.drv"), "Deriver"},
		{"Sig without name", edit("Sig", "Sig: "+sig[2:]), "NAME:BASE64"},
		{"Sig short", edit("Sig", "Sig: k:AAAA"), "64 bytes"},
		{"Sig not base64", edit("Sig", "Sig: k:"+strings.Repeat("!", 88)), "64 bytes"},
		{"CA unknown method", edit("CA", "CA: guess:sha256:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg"), "want text"},
		{"CA unknown algorithm", edit("CA", "CA: fixed:r:sha3:01q6czwzsqwpkfp82cm87f8vkqxnmz3biw0g4rydm63hpi3ifppg"), "unknown hash algorithm"},
		{"CA short digest", edit("CA", "CA: fixed:r:sha256:01q6"), "not a sha256 digest"},
		{"CA text md5", edit("CA", "CA: text:md5:01q6czwzsqwpkfp82cm87f8vkq"), "sha256"},
		{"URL empty", edit("URL", "URL: "), "URL"},
		{"URL climbs out", edit("URL", "URL: nar/../../etc/passwd"), "no empty, . or .. parts"},
		{"URL absolute path", edit("URL", "URL: /etc/passwd"), "no empty, . or .. parts"},
		{"URL file scheme", edit("URL", "URL: file:///etc/passwd"), "URL"},
		{"URL backslash", edit("URL", `URL: nar\..\x.nar`), "not allowed"},
		{"URL fragment", edit("URL", "URL: nar/x.nar#y"), "not allowed"},
		{"URL http without host", edit("URL", "URL: http:///x.nar"), "http(s) URL"},
		{"System with space", edit("System", "System: x86_64 linux"), "System"},
		{"repeated field", leafNarInfo + "NarSize: 128\n", "repeated (first on line 5)"},
		{"repeated References", leafNarInfo + "References: \n", "repeated"},
		{"no space after colon", edit("NarSize", "NarSize:128"), `want "Key: value"`},
		{"blank line", strings.Replace(leafNarInfo, "\n", "\n\n", 1), "blank line"},
		{"CRLF", strings.ReplaceAll(leafNarInfo, "\n", "\r\n"), "control character"},
		{"NUL in value", edit("System", "System: x86\x00"), "control character"},
		{"bad key", edit("X", "Store Path: x"), "field name"},
		{"too big", leafNarInfo + "X: " + strings.Repeat("a", MaxNarInfoSize) + "\n", "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNarInfo(nix.DefaultStoreDir, []byte(tc.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.in)
			}
			if !errors.Is(err, ErrBadNarInfo) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

// FuzzParseNarInfo checks that the parser never panics, and that what it
// accepts survives Encode and a second parse unchanged.
func FuzzParseNarInfo(f *testing.F) {
	f.Add([]byte(midNarInfo))
	f.Add([]byte(leafNarInfo))
	f.Add([]byte(strings.ReplaceAll(midNarInfo, "Compression: xz\n", "CA: fixed:r:sha256:099j28b2w2wgh1vyzxfz381qjg4lyz1af9h0nxy3kgcgw1k8kkgl\nSystem: x86_64-linux\n")))
	f.Add([]byte("StorePath: /nix/store/ybf7by4xvcgjhwilsg87rqz9di79bify-greeting\nURL: https://cache.example/nar/x.nar?hash=ybf7\nNarHash: sha256-HDfQGvQL4ugGkd48w99EN3qZr7sXxo8ICWSy/QcfwRM=\nNarSize: 120\nCA: text:sha256:1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ni, err := ParseNarInfo(nix.DefaultStoreDir, b)
		if err != nil {
			if !errors.Is(err, ErrBadNarInfo) {
				t.Fatalf("error without ErrBadNarInfo: %v", err)
			}
			return
		}
		enc := ni.Encode(nix.DefaultStoreDir)
		again, err := ParseNarInfo(nix.DefaultStoreDir, enc)
		if err != nil {
			t.Fatalf("cannot parse its own encoding: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(ni, again) {
			t.Fatalf("round trip changed it:\n%+v\n%+v", ni, again)
		}
		if string(again.Encode(nix.DefaultStoreDir)) != string(enc) {
			t.Fatal("encoding is not stable")
		}
	})
}
