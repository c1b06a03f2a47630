// Package cmdline splits a hook's command line into the program and its
// arguments the way a POSIX shell would quote them, without running a
// shell: no globbing, pipes, redirections or variable expansion happen
// here. It is its own package so that the configuration can refuse a line
// that cannot be split when the daemon starts, not when the hook first runs.
package cmdline

import (
	"errors"
	"strings"
)

// Split breaks line into words: blanks separate words; 'single quotes'
// keep everything literally; "double quotes" keep everything but a
// backslash before $, `, ", \ or a newline; outside quotes a backslash
// keeps the next character (a backslash-newline is removed). An empty
// line gives no words. It is the splitting MediaMTX does (go-shellquote).
func Split(line string) ([]string, error) {
	var (
		words  []string
		word   strings.Builder
		inWord bool
	)
	flush := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			flush()
		case c == '\\':
			if i+1 >= len(line) {
				return nil, errors.New("the command line ends with a lone backslash")
			}
			i++
			if line[i] != '\n' { // a backslash-newline only continues the line
				word.WriteByte(line[i])
				inWord = true
			}
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("the command line has an unterminated single quote")
			}
			word.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			closed := false
			for ; i < len(line); i++ {
				d := line[i]
				if d == '"' {
					closed = true
					break
				}
				if d == '\\' && i+1 < len(line) && strings.IndexByte("$`\"\\\n", line[i+1]) >= 0 {
					i++
					if line[i] != '\n' {
						word.WriteByte(line[i])
					}
					continue
				}
				word.WriteByte(d)
			}
			if !closed {
				return nil, errors.New("the command line has an unterminated double quote")
			}
			inWord = true
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

// Check says why line cannot be run as a hook ("" can: it runs nothing).
func Check(line string) error {
	words, err := Split(line)
	if err != nil {
		return err
	}
	if len(words) > 0 && words[0] == "" {
		return errors.New("the command line names no program")
	}
	return nil
}
