// Command trove is trove's command line. It has one job: parse flags, call
// the store (and later the agent), and print. Anything a test needs to reach
// without the command line belongs in a package, not here.
//
// Each command lives in its own file and is built by a newXxxCmd function
// from an *app, which carries standard input and output, the environment and
// the global flags, so tests run the whole command tree in-process.
//
// Exit status: 0 on success, 1 when the command failed, 2 when the command
// line itself is wrong (unknown command or flag, wrong number of arguments,
// a malformed store path). Errors go to standard error as "trove: <message>".
package main
