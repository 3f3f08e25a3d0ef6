package conf

import (
	"fmt"
	"strings"
)

// Selector matches node labels. The syntax is the subset of Calico's that
// pools use in practice:
//
//	all()      !all() (matches no node: the pool is used only when named)
//	has(key)   !has(key)
//	key == 'value'   key != 'value'
//	key in {'a', 'b'}   key not in {'a', 'b'}
//
// joined with && (binding tighter) and ||. Values are quoted with ' or ".
type Selector struct {
	// any of the groups must match; a group matches when all its terms do.
	groups [][]term
	src    string
}

type term struct {
	op     string // all, has, !has, ==, !=, in, notin
	key    string
	values []string
}

// String returns the selector as written.
func (s Selector) String() string { return s.src }

// Matches reports whether a node with these labels is selected.
func (s Selector) Matches(labels map[string]string) bool {
	for _, g := range s.groups {
		ok := true
		for _, t := range g {
			if !t.matches(labels) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (t term) matches(labels map[string]string) bool {
	v, has := labels[t.key]
	switch t.op {
	case "all":
		return true
	case "none":
		return false
	case "has":
		return has
	case "!has":
		return !has
	case "==":
		return has && v == t.values[0]
	case "!=":
		return !has || v != t.values[0]
	case "in":
		return has && contains(t.values, v)
	case "notin":
		return !has || !contains(t.values, v)
	}
	return false
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// ParseSelector parses a node selector; the empty string means all().
func ParseSelector(src string) (Selector, error) {
	sel := Selector{src: src}
	if strings.TrimSpace(src) == "" {
		src = SelectAll
	}
	toks, err := tokenize(src)
	if err != nil {
		return sel, err
	}
	p := &selParser{toks: toks}
	group := []term{}
	for {
		t, err := p.term()
		if err != nil {
			return sel, err
		}
		group = append(group, t)
		switch p.next() {
		case "":
			sel.groups = append(sel.groups, group)
			return sel, nil
		case "&&":
		case "||":
			sel.groups = append(sel.groups, group)
			group = []term{}
		default:
			return sel, fmt.Errorf("expected && or || at %q", p.toks[p.i-1])
		}
	}
}

type selParser struct {
	toks []string
	i    int
}

func (p *selParser) next() string {
	if p.i >= len(p.toks) {
		return ""
	}
	p.i++
	return p.toks[p.i-1]
}

func (p *selParser) expect(want string) error {
	if got := p.next(); got != want {
		return fmt.Errorf("expected %q, got %q", want, got)
	}
	return nil
}

func (p *selParser) term() (term, error) {
	tok := p.next()
	switch tok {
	case "all":
		if err := p.expect("("); err != nil {
			return term{}, err
		}
		return term{op: "all"}, p.expect(")")
	case "has", "!":
		op := "has"
		if tok == "!" {
			op = "!has"
			switch p.next() {
			case "has":
			case "all":
				if err := p.expect("("); err != nil {
					return term{}, err
				}
				return term{op: "none"}, p.expect(")")
			default:
				return term{}, fmt.Errorf("expected has(key) or all() after \"!\"")
			}
		}
		if err := p.expect("("); err != nil {
			return term{}, err
		}
		key := p.next()
		if !isKey(key) {
			return term{}, fmt.Errorf("bad label key %q", key)
		}
		return term{op: op, key: key}, p.expect(")")
	}
	if !isKey(tok) {
		return term{}, fmt.Errorf("bad label key %q", tok)
	}
	t := term{key: tok}
	switch op := p.next(); op {
	case "==", "!=":
		v, err := p.value()
		if err != nil {
			return t, err
		}
		t.op, t.values = op, []string{v}
		return t, nil
	case "not":
		if err := p.expect("in"); err != nil {
			return t, err
		}
		t.op = "notin"
	case "in":
		t.op = "in"
	default:
		return t, fmt.Errorf("expected ==, !=, in or not in after %q, got %q", tok, op)
	}
	if err := p.expect("{"); err != nil {
		return t, err
	}
	for {
		v, err := p.value()
		if err != nil {
			return t, err
		}
		t.values = append(t.values, v)
		switch p.next() {
		case ",":
		case "}":
			return t, nil
		default:
			return t, fmt.Errorf("expected , or } in set")
		}
	}
}

func (p *selParser) value() (string, error) {
	v := p.next()
	if len(v) < 2 || (v[0] != '\'' && v[0] != '"') {
		return "", fmt.Errorf("expected a quoted value, got %q", v)
	}
	return v[1 : len(v)-1], nil
}

func isKey(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r == '/' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func tokenize(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"),
			strings.HasPrefix(s[i:], "=="), strings.HasPrefix(s[i:], "!="):
			toks = append(toks, s[i:i+2])
			i += 2
		case c == '(' || c == ')' || c == '{' || c == '}' || c == ',' || c == '!':
			toks = append(toks, string(c))
			i++
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated quote at offset %d", i)
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 2
		default:
			j := i
			for j < len(s) && isKey(s[j:j+1]) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q at offset %d", c, i)
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}
