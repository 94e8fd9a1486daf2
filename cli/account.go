package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newRegisterCmd() *cobra.Command { return newCredentialsCmd("register") }
func newLoginCmd() *cobra.Command    { return newCredentialsCmd("login") }

// newCredentialsCmd builds `parley register NAME` and `parley login NAME`:
// both ask for a password and hand it to the daemon.
func newCredentialsCmd(what string) *cobra.Command {
	var data, pwFile string
	short := "Log this device in"
	if what == "register" {
		short = "Create an account and log this device in"
	}
	cmd := &cobra.Command{
		Use:   what + " NAME",
		Short: short,
		Long: short + `.

The password is read from the terminal (not echoed), or from the first line
of --password-file (- for standard input) for scripts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			pw, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr(), pwFile, what == "register")
			if err != nil {
				return err
			}
			if what == "register" {
				err = c.Register(cmd.Context(), args[0], pw)
			} else {
				err = c.Login(cmd.Context(), args[0], pw)
			}
			if err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in as %s\n", args[0])
			return nil
		},
	}
	addDataFlag(cmd, &data)
	cmd.Flags().StringVar(&pwFile, "password-file", "", "read the password from the first line of this file (- for standard input)")
	return cmd
}

func newLogoutCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Log this device out and forget its contacts cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Logout(cmd.Context()); err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "logged out")
			return nil
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

// readPassword reads the password from file ("-": stdin), or from the
// terminal without echo; confirm asks twice.
func readPassword(stdin io.Reader, prompt io.Writer, file string, confirm bool) (string, error) {
	if file != "" {
		var r io.Reader = stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return "", fmt.Errorf("password file: %w", err)
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("password file: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", errors.New("the password file is empty: put the password on its first line")
		}
		return line, nil
	}
	f, ok := stdin.(*os.File)
	if !ok {
		return "", usageError{errors.New("no terminal to ask for the password: give --password-file")}
	}
	pw, err := askNoEcho(f, prompt, "Password: ")
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := askNoEcho(f, prompt, "Password again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("the passwords differ: try again")
		}
	}
	return pw, nil
}

// askNoEcho prompts and reads a line from the terminal f with echo off.
func askNoEcho(f *os.File, prompt io.Writer, msg string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", usageError{errors.New("standard input is not a terminal: give --password-file")}
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(prompt, msg)
	line, err := bufio.NewReader(f).ReadString('\n')
	fmt.Fprintln(prompt)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
