#include "FuzzDriver.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// libFuzzer's entry for programs with their own main. Weak: it resolves only when the program is
// linked with -sanitize=fuzzer; otherwise it is null and the inputs are replayed.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t)) __attribute__((weak));

static int replay_file(const char *path, int (*test_one_input)(const uint8_t *, size_t)) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return 1; }
    size_t capacity = 1 << 16, size = 0;
    uint8_t *data = malloc(capacity);
    size_t n;
    while (data && (n = fread(data + size, 1, capacity - size, f)) > 0) {
        size += n;
        if (size == capacity) { capacity *= 2; data = realloc(data, capacity); }
    }
    fclose(f);
    if (!data) { fprintf(stderr, "out of memory reading %s\n", path); return 1; }
    test_one_input(data, size);
    free(data);
    return 0;
}

static int replay(const char *path, int (*test_one_input)(const uint8_t *, size_t), int *count) {
    struct stat st;
    if (stat(path, &st) != 0) { fprintf(stderr, "no such file or directory: %s\n", path); return 1; }
    if (!S_ISDIR(st.st_mode)) { ++*count; return replay_file(path, test_one_input); }
    DIR *dir = opendir(path);
    if (!dir) { fprintf(stderr, "cannot read directory %s\n", path); return 1; }
    int failed = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        size_t length = strlen(path) + strlen(entry->d_name) + 2;
        char *child = malloc(length);
        snprintf(child, length, "%s/%s", path, entry->d_name);
        failed |= replay(child, test_one_input, count);
        free(child);
    }
    closedir(dir);
    return failed;
}

int fuzz_driver_main(int argc, char **argv, int (*test_one_input)(const uint8_t *, size_t)) {
    if (LLVMFuzzerRunDriver) return LLVMFuzzerRunDriver(&argc, &argv, test_one_input);
    int failed = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;  // libFuzzer flags mean nothing to a replay
        failed |= replay(argv[i], test_one_input, &count);
    }
    fprintf(stderr, "replayed %d inputs (built without -sanitize=fuzzer: no fuzzing)\n", count);
    return failed;
}
