// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"fmt"
	"strconv"
	"strings"
)

// Config is a libconfig file flattened to dotted keys ("drain.timeout_ms"):
// values are string, int64, float64, bool or []any (arrays and lists).
type Config map[string]any

// ParseLibconfig reads the subset of libconfig the services' files use:
// settings (= or :), groups, arrays, lists, strings (adjacent ones joined),
// integers (decimal, hex, an L suffix), floats, booleans and #, // and /* */
// comments. @include is refused (the manifests mount one file per service).
func ParseLibconfig(text string) (Config, error) {
	p := &cfgParser{s: text, out: Config{}}
	if err := p.settings("", 0); err != nil {
		return nil, fmt.Errorf("line %d: %w", p.line(), err)
	}
	return p.out, nil
}

type cfgParser struct {
	s   string
	i   int
	out Config
}

func (p *cfgParser) line() int { return strings.Count(p.s[:p.i], "\n") + 1 }

func (p *cfgParser) skipBlanks() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.i++
		case c == '#' || strings.HasPrefix(p.s[p.i:], "//"):
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		case strings.HasPrefix(p.s[p.i:], "/*"):
			end := strings.Index(p.s[p.i+2:], "*/")
			if end < 0 {
				p.i = len(p.s)
				return
			}
			p.i += end + 4
		default:
			return
		}
	}
}

func (p *cfgParser) peek() byte {
	p.skipBlanks()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func isNameChar(c byte, first bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*' ||
		!first && (c >= '0' && c <= '9' || c == '_' || c == '-')
}

// settings reads settings up to the end (depth 0) or a closing '}'.
func (p *cfgParser) settings(prefix string, depth int) error {
	for {
		c := p.peek()
		if c == 0 {
			if depth > 0 {
				return fmt.Errorf("missing '}'")
			}
			return nil
		}
		if c == '}' && depth > 0 {
			p.i++
			return nil
		}
		if c == '@' {
			return fmt.Errorf("@include is not supported here")
		}
		if !isNameChar(c, true) {
			return fmt.Errorf("expected a setting name, found %q", c)
		}
		start := p.i
		for p.i < len(p.s) && isNameChar(p.s[p.i], false) {
			p.i++
		}
		key := prefix + p.s[start:p.i]
		if c := p.peek(); c != '=' && c != ':' {
			return fmt.Errorf("expected '=' or ':' after %s", key)
		}
		p.i++
		if p.peek() == '{' {
			p.i++
			if err := p.settings(key+".", depth+1); err != nil {
				return err
			}
		} else {
			v, err := p.value()
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if _, dup := p.out[key]; dup {
				return fmt.Errorf("%s set twice", key)
			}
			p.out[key] = v
		}
		if c := p.peek(); c == ';' || c == ',' {
			p.i++
		}
	}
}

func (p *cfgParser) value() (any, error) {
	switch c := p.peek(); {
	case c == '"':
		var b strings.Builder
		for p.peek() == '"' { // adjacent strings are one
			p.i++
			for {
				if p.i >= len(p.s) {
					return nil, fmt.Errorf("unterminated string")
				}
				c := p.s[p.i]
				p.i++
				if c == '"' {
					break
				}
				if c == '\\' && p.i < len(p.s) {
					e := p.s[p.i]
					p.i++
					switch e {
					case 'n':
						c = '\n'
					case 't':
						c = '\t'
					case 'r':
						c = '\r'
					case 'f':
						c = '\f'
					default:
						c = e
					}
				}
				b.WriteByte(c)
			}
		}
		return b.String(), nil
	case c == '[' || c == '(':
		closing := byte(']')
		if c == '(' {
			closing = ')'
		}
		p.i++
		var list []any
		for {
			if p.peek() == closing {
				p.i++
				return list, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
			if p.peek() == ',' {
				p.i++
			} else if p.peek() != closing {
				return nil, fmt.Errorf("expected ',' or %q in a list", closing)
			}
		}
	case c == '{':
		return nil, fmt.Errorf("a group inside a list is not supported")
	default:
		start := p.i
		for p.i < len(p.s) && strings.IndexByte(" \t\r\n;,])}#/", p.s[p.i]) < 0 {
			p.i++
		}
		tok := p.s[start:p.i]
		switch strings.ToLower(tok) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		num := strings.TrimRight(tok, "Ll")
		if n, err := strconv.ParseInt(num, 0, 64); err == nil {
			return n, nil
		}
		if f, err := strconv.ParseFloat(tok, 64); err == nil {
			return f, nil
		}
		return nil, fmt.Errorf("cannot read value %q", tok)
	}
}

// Set applies one --set KEY=VALUE as the services do after the file: the
// value is kept as text (Int reads it).
func (c Config) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("--set %q: want KEY=VALUE", kv)
	}
	c[k] = v
	return nil
}

// Int returns key as an integer, def when it is absent.
func (c Config) Int(key string, def int64) (int64, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case int64:
		return x, nil
	case string:
		n, err := strconv.ParseInt(strings.TrimRight(x, "Ll"), 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%s = %q: not an integer", key, x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s: not an integer (%T)", key, v)
}

// Str returns key as a string, def when it is absent.
func (c Config) Str(key, def string) (string, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: not a string (%T)", key, v)
	}
	return s, nil
}

// Strings returns key as a list of strings (a --set value is comma-separated).
func (c Config) Strings(key string) ([]string, error) {
	v, ok := c[key]
	if !ok {
		return nil, nil
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			return nil, nil
		}
		return strings.Split(x, ","), nil
	case []any:
		var out []string
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s: a list of strings expected", key)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: not a list (%T)", key, v)
}
