// The module is the header alone (include/CPUPrefetch.h); SwiftPM wants one source file.
#include "CPUPrefetch.h"
