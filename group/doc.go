// Package group is the membership of a trust group: the signed records
// that say who is a member (and who was removed), the rule that merges
// records from other members so that every member converges on the same
// set, the invitation tokens a member prints and a new machine presents,
// and the invitations a member holds open (only a hash of each secret).
//
// It decides nothing about connections: the agent applies a merged set to
// the p2p.TrustGroup its connection gater uses, and p2p carries records
// and join requests on the wire.
package group
