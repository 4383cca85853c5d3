// Package manifest holds what makes content believable: Nix-format signing
// keys (name:base64, interchangeable with nix-store
// --generate-binary-cache-key), the set of trusted public keys, signature
// checks of PathInfos over Nix's fingerprint, and (with issue 5) signed
// configuration manifests and their generation history.
//
// manifest never touches the network.
package manifest
