package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/nestmtx/nestmtx/internal/app"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/password"
	"github.com/nestmtx/nestmtx/internal/store"
)

const adminUsage = `Usage: nestmtx admin <command> [flags]

Maintenance on the data directory, done offline: stop the daemon first.

Commands:
  reset-password [--data-dir DIR] [--config FILE] [--password-file FILE] USER
      Give USER a new password, end its sessions and allow it to log in again.
      The password is read from --password-file, else as one line from
      standard input when that is a pipe or a file, else generated and
      printed. The data directory is found as by serve: --data-dir,
      NESTMTX_DATA_DIR, data_dir in the YAML file (--config, NESTMTX_CONFIG),
      or ./data.
`

// admin runs the commands an operator needs when the daemon cannot help,
// such as an owner locked out of every account.
func admin(args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
	switch args[0] {
	case "reset-password":
		return resetPassword(args[1:], lookupEnv, stdin, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, adminUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "nestmtx admin: unknown command %q\n\n", args[0])
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
}

func resetPassword(args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("nestmtx admin reset-password", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.String("data-dir", "", "data directory (default: NESTMTX_DATA_DIR, the YAML file's data_dir, or ./data)")
	fset.String("config", "", "YAML file to read data_dir from (default: NESTMTX_CONFIG)")
	pwFile := fset.String("password-file", "", "file holding the new password (one trailing newline is removed)")
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), "Usage: nestmtx admin reset-password [flags] USER\n\n"+
			"Gives USER a new password, ends its sessions and allows it to log in again.\n"+
			"Stop the daemon first.\n\nFlags:\n")
		fset.PrintDefaults()
	}
	users, err := parseInterspersed(fset, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(users) != 1 {
		fmt.Fprintln(stderr, "nestmtx admin reset-password: name exactly one user")
		fset.Usage()
		return 2
	}
	name := users[0]

	// Only the data directory is taken from these flags; the rest of the
	// daemon's settings come from the environment and the file, as for serve.
	var cargs []string
	fset.Visit(func(f *flag.Flag) {
		if f.Name == "data-dir" || f.Name == "config" {
			cargs = append(cargs, "--"+f.Name+"="+f.Value.String())
		}
	})
	cfg, err := config.LoadOffline(cargs, lookupEnv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx:", err)
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nestmtx: "+format+"\n", a...)
		return 1
	}

	pw, generated, err := newPassword(*pwFile, stdin)
	if err != nil {
		return fail("%v", err)
	}

	dir := cfg.DataDir
	// Looked for before store.Open, which would create an empty store in a
	// mistyped directory and then report that the user does not exist.
	if _, err := os.Stat(store.DatabasePath(dir)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fail("no nestmtx database in %s; is the data directory right (--data-dir, NESTMTX_DATA_DIR)?", dir)
		}
		return fail("%v", err)
	}
	// store.Open gives up on the lock after a few seconds (bbolt would wait
	// forever); a running daemon holds it for its whole life.
	st, err := store.Open(dir, store.Options{})
	if errors.Is(err, store.ErrLocked) {
		return fail("the data directory %s is in use by a running nestmtx; stop it first", dir)
	}
	if err != nil {
		return fail("opening the data directory: %v", err)
	}
	defer st.Close()

	user, err := st.UserByName(name)
	if errors.Is(err, store.ErrNotFound) {
		return fail("no user %q in %s", name, dir)
	}
	if err != nil {
		return fail("reading the users: %v", err)
	}

	// The login is enabled too: a reset is how an owner gets back in when
	// the account left able to log in was disabled by mistake.
	canLogin := true
	if _, err := st.UpdateUser(user.ID, store.UserUpdate{Password: &pw, CanLogin: &canLogin}); err != nil {
		return fail("setting the password of %s: %v", user.Username, err)
	}
	how := "reset"
	if !user.CanLogin {
		how = "reset and its login enabled"
	}
	fmt.Fprintf(stdout, "password of %s %s; its sessions were ended\n", user.Username, how)
	if generated {
		fmt.Fprintf(stdout, "new password: %s\n", pw)
	}

	// The first start's file would now hold a password that no longer works.
	if strings.EqualFold(user.Username, "admin") {
		file := app.InitialPasswordFile(dir)
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "nestmtx: warning: could not remove %s, which holds the old password: %v\n", file, err)
		}
	}
	return 0
}

// parseInterspersed lets flags follow the positional arguments
// ("reset-password admin --data-dir /x"), which the flag package alone does
// not: it stops at the first argument that is not a flag.
func parseInterspersed(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		rest := fset.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// After "--" everything is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// maxPasswordLine bounds what is read from standard input: the longest
// password in bytes, and a line end.
const maxPasswordLine = password.MaxLength*utf8.UTFMax + 2

// newPassword picks the new password's source. Standard input is read only
// when it is a pipe or a file, so that a command typed at a terminal does
// not sit waiting for input the operator did not know to give.
func newPassword(file string, stdin io.Reader) (pw string, generated bool, err error) {
	switch {
	case file != "":
		pw, err = config.ReadSecretFile(file)
		if err != nil {
			return "", false, fmt.Errorf("--password-file: %w", err)
		}
		return pw, false, checkNewPassword(pw, "the password in "+file)
	case isPipeOrFile(stdin):
		pw, err = readPasswordLine(stdin)
		if err != nil {
			return "", false, err
		}
		return pw, false, checkNewPassword(pw, "the password on standard input")
	default:
		return password.Generate(), true, nil
	}
}

func isPipeOrFile(r io.Reader) bool {
	if r == nil {
		return false
	}
	f, ok := r.(*os.File)
	if !ok {
		return true // a reader handed in by a test
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice == 0
}

func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	if !strings.HasSuffix(line, "\n") && len(line) == maxPasswordLine {
		return "", fmt.Errorf("the password on standard input is longer than %d characters", password.MaxLength)
	}
	if strings.HasSuffix(line, "\r\n") {
		return line[:len(line)-2], nil
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// checkNewPassword never shows the password: it may be a mistyped real one.
func checkNewPassword(pw, what string) error {
	if !utf8.ValidString(pw) {
		return fmt.Errorf("%s is not valid UTF-8 text, so no login could send it", what)
	}
	if n := utf8.RuneCountInString(pw); n < password.MinLength || n > password.MaxLength {
		return fmt.Errorf("%s must be %d to %d characters long, not %d", what, password.MinLength, password.MaxLength, n)
	}
	return nil
}
