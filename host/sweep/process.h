#pragma once
// Child processes and the few system facts a sweep needs: starting a program with its output in a file, waiting for
// children, the usable CPU count, and a lock so that one sweep at a time works in a folder.
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ts::sweep {

// Starts `program` with `arguments` (argv[1..]), in the current folder, stdin from /dev/null, stdout and stderr
// appended to `output`. The child is sent SIGTERM if this process dies (so a killed sweep leaves no orphans
// behind), and stays in this process group (so Ctrl-C and a group kill reach it). Throws ts::Error on failure.
pid_t start_process(const std::filesystem::path& program, const std::vector<std::string>& arguments,
                    const std::filesystem::path& output);

struct ProcessExit {
  pid_t pid = -1;
  int exit_status = -1;   // the exit status, or -1 when killed by a signal
  int signal = 0;         // the signal that ended it, if any
  std::string describe() const;  // "exit status 1", "killed by signal 9 (Killed)"
};

// Waits for `pid`, or for any child when pid is -1.
ProcessExit wait_process(pid_t pid = -1);

// Runs `program` to the end; its output goes to `output`.
ProcessExit run_process(const std::filesystem::path& program, const std::vector<std::string>& arguments,
                        const std::filesystem::path& output);

// `name` on PATH, as the shell would find it.
std::optional<std::filesystem::path> find_program(const std::string& name);

// CPUs this process may run on (sched_getaffinity: respects taskset and Slurm's allocation).
int usable_cpus();

// This executable (/proc/self/exe).
std::filesystem::path current_executable();

// An exclusive lock on `path` (flock), released when the object goes or the process dies. Throws ts::Error saying
// that another sweep holds it.
class FolderLock {
 public:
  FolderLock(const std::filesystem::path& path, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

// `text` as one word for the shell: unchanged when it is plain, else in single quotes.
std::string shell_quote(const std::string& text);

// Text from `offset` to the end of `path` (empty if it cannot be read).
std::string read_from(const std::filesystem::path& path, std::uintmax_t offset);

}  // namespace ts::sweep
