package testnet

import (
	"fmt"
	"strconv"
	"time"
)

// Link is the shaping of one agent's link to the LAN's bridge, applied in
// each direction (what the agent sends and what it receives). Zero fields
// leave that property alone.
type Link struct {
	Rate  int64         // bits per second
	Delay time.Duration // added one-way delay
	Loss  float64       // percent of packets dropped
}

// tcCommands are the tc command lines (without "tc -n NS") that shape dev
// as l says, after clearing it. Delay and loss need the kernel's netem
// qdisc; rate alone uses tbf. With both, tbf sits under netem.
func tcCommands(dev string, l Link) [][]string {
	cmds := [][]string{}
	var tbf []string
	if l.Rate > 0 {
		// A burst of 10 ms at the rate (at least 32 KiB, which covers the
		// largest packets with offloads); packets wait at most 50 ms.
		burst := max(l.Rate/8/100, 32<<10)
		tbf = []string{"tbf", "rate", strconv.FormatInt(l.Rate, 10) + "bit",
			"burst", strconv.FormatInt(burst, 10), "latency", "50ms"}
	}
	switch {
	case l.Delay > 0 || l.Loss > 0:
		netem := []string{"qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "limit", "100000"}
		if l.Delay > 0 {
			netem = append(netem, "delay", fmt.Sprintf("%dus", l.Delay.Microseconds()))
		}
		if l.Loss > 0 {
			netem = append(netem, "loss", strconv.FormatFloat(l.Loss, 'f', -1, 64)+"%")
		}
		cmds = append(cmds, netem)
		if tbf != nil {
			cmds = append(cmds, append([]string{"qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:"}, tbf...))
		}
	case tbf != nil:
		cmds = append(cmds, append([]string{"qdisc", "add", "dev", dev, "root", "handle", "1:"}, tbf...))
	}
	return cmds
}
