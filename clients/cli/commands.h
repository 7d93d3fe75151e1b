// The `tpserve` command line (layer: clients): subcommand dispatch and the subcommands
// generate, stream, tokenize, health, status, model, batch and bench. Each parses its own flags
// (flags.h) and talks to the cluster through the C++ SDK (clients/cpp/client.h).
#pragma once

#include <string>
#include <vector>

namespace tpserve::cli {

// Exit codes of the tool.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an RPC failed, a file is bad, a batch is incomplete,
                                        // health is not SERVING
inline constexpr int kExitUsage = 2;    // unknown subcommand or flag, bad or missing flag value

// Runs `tpserve ARGS...` (args exclude the program name), writing results to stdout and
// messages, progress and usage to stderr; returns the exit code. Blocks until done.
int RunCli(const std::vector<std::string>& args);

}  // namespace tpserve::cli
