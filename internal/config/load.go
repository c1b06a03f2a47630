// Loading: flags over environment over the YAML file over the defaults.

package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
)

// Load builds the configuration from args (without the program name or
// subcommand), an environment lookup such as os.LookupEnv and the YAML file
// named by --config or NESTMTX_CONFIG, and reads the password files it
// names. Usage is written to usage on -h or a flag error, and so are
// warnings (one line each, such as a password given as a flag); -h returns
// flag.ErrHelp.
func Load(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	return load(args, lookupEnv, usage, true)
}

// LoadOffline is Load for the commands that work offline on the data
// directory (nestmtx admin): every value is parsed and validated on its own,
// but the checks across keys and the reading of password files are skipped,
// because they concern only the daemon and must not stop an operator
// repairing its data (a password file only the service user can read, say).
// AdminPassword and MQTTPassword are therefore not filled from their files.
func LoadOffline(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	return load(args, lookupEnv, usage, false)
}

func load(args []string, lookupEnv func(string) (string, bool), usage io.Writer, forDaemon bool) (Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	if usage == nil {
		usage = io.Discard
	}

	fset := flag.NewFlagSet("nestmtx", flag.ContinueOnError)
	fset.SetOutput(usage)
	flagVals := make([]*string, len(settings))
	for i, s := range settings {
		if s.isBool {
			v := s.Default
			flagVals[i] = &v
			fset.Var(boolFlag{&v}, s.Flag, flagUsage(s))
			continue
		}
		flagVals[i] = fset.String(s.Flag, s.Default, flagUsage(s))
	}
	fset.Usage = func() {
		fmt.Fprintf(usage, "Usage: nestmtx serve [flags]\n\n"+
			"Flags override environment variables, which override the YAML file given by\n"+
			"--config, which overrides the defaults.\n\n")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if fset.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fset.Arg(0))
	}
	flagSet := make([]bool, len(settings))
	fset.Visit(func(f *flag.Flag) {
		for i, s := range settings {
			if s.Flag == f.Name {
				flagSet[i] = true
			}
		}
	})
	for i, s := range settings {
		if s.Secret && flagSet[i] && *flagVals[i] != "" {
			instead := "the environment"
			if f := passwordFileIndex(s.YAMLKey); f >= 0 {
				instead = settings[f].Env[0] + " (or the environment)"
			}
			fmt.Fprintf(usage, "nestmtx: warning: --%s is visible to every user of this machine in ps; use %s instead\n", s.Flag, instead)
		}
	}

	// fromEnv treats an empty variable as unset: compose files and
	// systemd units commonly declare variables they leave blank.
	fromEnv := func(s Setting) (raw, origin string, ok bool) {
		for _, name := range s.Env {
			if v, found := lookupEnv(name); found && v != "" {
				return v, name, true
			}
		}
		return "", "", false
	}

	c := Defaults()
	origins := make([]string, len(settings))

	// The file location must be known before anything else is applied,
	// and follows the same flag-over-env rule; an explicit --config=""
	// therefore disables a file named in the environment.
	cfgIdx := slices.IndexFunc(settings, func(s Setting) bool { return s.Flag == "config" })
	path, pathOrigin := "", ""
	if flagSet[cfgIdx] {
		path, pathOrigin = *flagVals[cfgIdx], "--"+settings[cfgIdx].Flag
	} else if v, origin, ok := fromEnv(settings[cfgIdx]); ok {
		path, pathOrigin = v, origin
	}
	if path != "" {
		entries, err := readYAML(path, pathOrigin)
		if err != nil {
			return Config{}, err
		}
		for _, e := range entries {
			i := settingIndex(e.key)
			if err := settings[i].apply(&c, e.value); err != nil {
				return Config{}, fmt.Errorf("config: %s: %s: %w", path, e.name, err)
			}
			origins[i] = path + ": " + e.name
		}
	}

	for i, s := range settings {
		if raw, origin, ok := fromEnv(s); ok {
			if err := s.apply(&c, raw); err != nil {
				return Config{}, fmt.Errorf("config: %s: %w", origin, err)
			}
			origins[i] = origin
		}
	}
	for i, s := range settings {
		if flagSet[i] {
			origin := "--" + s.Flag
			if err := s.apply(&c, *flagVals[i]); err != nil {
				return Config{}, fmt.Errorf("config: %s: %w", origin, err)
			}
			origins[i] = origin
		}
	}

	label := func(i int) string {
		if origins[i] != "" {
			return origins[i]
		}
		return settings[i].name()
	}
	if !forDaemon {
		return c, nil
	}
	if err := readPasswordFiles(&c, label); err != nil {
		return Config{}, err
	}
	if err := crossCheck(&c, label); err != nil {
		return Config{}, err
	}
	return c, nil
}

// boolFlag keeps a boolean flag's raw text for the common parsing, while
// telling the flag package that the flag may stand alone.
type boolFlag struct{ v *string }

func (b boolFlag) String() string {
	if b.v == nil {
		return ""
	}
	return *b.v
}
func (b boolFlag) Set(s string) error { *b.v = s; return nil }
func (b boolFlag) IsBoolFlag() bool   { return true }
