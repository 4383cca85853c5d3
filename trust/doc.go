// Package trust holds trove's one belief rule: whether a PathInfo that
// came from outside (a peer, a bundle, a binary cache) may be believed,
// and if not, why not.
//
// A PathInfo is believable when
//
//   - a verified signed manifest lists it, and it agrees with every
//     manifest that lists it on every field a manifest carries (name,
//     narHash, narSize, references, deriver, CA and, when the PathInfo
//     carries one, the chunk index ID); a manifest that disagrees refuses
//     the path even if a trusted key signed it; or
//   - one of its signatures verifies under a trusted key, over Nix's
//     fingerprint of the path; or
//   - its CA is "fixed:r:sha256:…" equal to its narHash and its store
//     path recomputes from it (the NAR check, done where the NAR is
//     unpacked, then proves the content).
//
// Everything else is refused with an *UntrustedError, which errors.Is
// ErrUntrusted and says why (see Reason). Sync, bundle import and the
// binary-cache import all ask a Trust; none has a rule of its own.
//
// trust uses nix and manifest; it knows nothing of peers, stores or files.
package trust
