// tpserve: command-line client of a tpserve cluster (see clients/cli/commands.h, or `tpserve help`).
// `tpserve launch CONFIG.yaml` hands over to tpserve-launch, built beside this program.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "clients/cli/commands.h"

namespace {

int Launch(char** argv) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::canonical("/proc/self/exe", ec);
  const std::string launcher = (self.parent_path().parent_path() / "launcher" / "tpserve-launch").string();
  argv[0] = const_cast<char*>(launcher.c_str());
  execv(launcher.c_str(), argv);
  std::fprintf(stderr, "tpserve launch: cannot run %s\n", launcher.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "launch") return Launch(argv + 1);
  std::vector<std::string> args(argv + 1, argv + argc);
  return tpserve::cli::RunCli(args);
}
