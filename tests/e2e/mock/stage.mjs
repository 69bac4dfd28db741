// NAME
//   mock/stage.mjs - an idle process standing for a baton stage (mock relay).
// DESCRIPTION
//   argv: baton-<role> <index>. Does nothing until killed; exits when its
//   parent (the mock supervisor) goes away.
// DIAGNOSTICS
//   None.
const ppid = process.ppid
setInterval(() => {
  try {
    process.kill(ppid, 0)
  } catch {
    process.exit(0)
  }
}, 500)
