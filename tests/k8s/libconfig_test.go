// SPDX-License-Identifier: Apache-2.0

package k8s

import "testing"

func TestParseLibconfig(t *testing.T) {
	c, err := ParseLibconfig(`# comment
replica = "a" "b"; // joined
grpc = { listen = "0.0.0.0:7100"; };
/* block
   comment */
drain : { notserving_ms = 0x10; timeout_ms = 20000L; }
handlers = { exec = [ "upper", "x" ]; concurrency = 8 };
exec = { upper = { argv = ( "/usr/bin/tr", "a-z" ); memory_mb = 256; }; };
flag = TRUE; ratio = 1.5;
`)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]int64{"drain.notserving_ms": 16, "drain.timeout_ms": 20000, "handlers.concurrency": 8, "exec.upper.memory_mb": 256, "absent": 7} {
		if got, err := c.Int(k, 7); err != nil || got != want {
			t.Errorf("%s = %d (%v), want %d", k, got, err, want)
		}
	}
	if s, _ := c.Str("replica", ""); s != "ab" {
		t.Errorf("replica = %q", s)
	}
	if l, _ := c.Strings("exec.upper.argv"); len(l) != 2 || l[1] != "a-z" {
		t.Errorf("argv = %q", l)
	}
	if c["flag"] != true || c["ratio"] != 1.5 {
		t.Errorf("flag %v ratio %v", c["flag"], c["ratio"])
	}
	if err := c.Set("drain.timeout_ms=30000"); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Int("drain.timeout_ms", 0); n != 30000 {
		t.Errorf("--set drain.timeout_ms: %d", n)
	}
	for _, bad := range []string{`a = ;`, `a = "x`, `g = { a = 1;`, `@include "x.cfg"`, `a = 1; a = 2;`} {
		if _, err := ParseLibconfig(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
