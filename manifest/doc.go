// Package manifest holds what makes content believable: Nix-format signing
// keys (name:base64, interchangeable with nix-store
// --generate-binary-cache-key), the set of trusted public keys, signature
// checks of PathInfos over Nix's fingerprint (with the configurations each
// key may publish), signed configuration manifests and their canonical
// encoding, and the generation history that decides which manifests are
// accepted (never a different manifest of a generation it holds).
//
// manifest never touches the network.
package manifest
