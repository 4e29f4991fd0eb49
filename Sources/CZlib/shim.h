// The system zlib (Debian: zlib1g-dev), for reading gzip request bodies with exact limits.
#include <zlib.h>
