package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameLen is the longest offered name, in bytes: the common file-system
// limit, less room for " (999)" and the partial suffix.
const maxNameLen = 200

// ErrBadName is returned for an offered name that is not a plain file name.
var ErrBadName = errors.New("files: not a safe file name")

// ValidName checks that name, as a peer offered it, is a plain file name: no
// directory parts (either slash, or a colon), not "." or "..", no control
// characters, no leading or trailing spaces, no trailing dot, valid UTF-8, at
// most 200 bytes. A name failing it is refused, never "cleaned": the receiver should
// see what the sender meant, or nothing.
func ValidName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%w: %q", ErrBadName, name)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadName, maxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrBadName)
	case strings.ContainsAny(name, `/\:`):
		// ':' too: a drive or stream name on Windows.
		return fmt.Errorf("%w: %q has a directory part", ErrBadName, name)
	case strings.TrimSpace(name) != name, strings.HasSuffix(name, "."):
		return fmt.Errorf("%w: %q has leading or trailing spaces or dots", ErrBadName, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("%w: %q has control characters", ErrBadName, name)
		}
	}
	return nil
}

// createUnique moves the file at from into dir under name, or, when that
// exists, "name (1).ext", "name (2).ext", …; it never replaces an existing
// file. It returns the path used.
func createUnique(from, dir, name string) (string, error) {
	ext := filepath.Ext(name)
	base := strings.TrimSuffix(name, ext)
	if base == "" { // ".bashrc": the whole name is the base
		base, ext = name, ""
	}
	for i := 0; i < 1000; i++ {
		n := name
		if i > 0 {
			n = fmt.Sprintf("%s (%d)%s", base, i, ext)
		}
		to := filepath.Join(dir, n)
		// A hard link fails when to exists, atomically: no window in which
		// another writer's file could be replaced.
		err := os.Link(from, to)
		if err == nil {
			os.Remove(from)
			return to, nil
		}
		if errors.Is(err, os.ErrExist) {
			continue
		}
		// No hard links here (some file systems): check, then rename.
		if _, serr := os.Lstat(to); serr == nil {
			continue
		}
		if err := os.Rename(from, to); err != nil {
			return "", err
		}
		return to, nil
	}
	return "", fmt.Errorf("files: no free name for %q in %s", name, dir)
}
