package profile

// highestFile is where the high-water mark of name's profile is.
func (p *Profiles) highestFile(name string) string {
	l, err := p.place(name)
	if err != nil {
		panic(err)
	}
	return l.mark("highest")
}

// writeHighest sets the high-water mark of name's profile.
func (p *Profiles) writeHighest(name string, gen uint64) error {
	l, err := p.place(name)
	if err != nil {
		return err
	}
	return l.writeHighest(gen)
}
