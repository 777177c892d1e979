#ifndef SWIFTLET_FUZZ_DRIVER_H
#define SWIFTLET_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// The entry point of every fuzz target. Built with `-sanitize=fuzzer`, it hands the command line
/// to libFuzzer (its flags and corpus directories). Built without, it replays the inputs instead:
/// each file argument, and every file in each directory argument, goes once through
/// `test_one_input`, so a crash a fuzzer found can be rerun in an ordinary build.
int fuzz_driver_main(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
