/*
 * Page log (pagelog.h): per page, a contiguous batch of that page's records
 * in LSN order plus an optional coalesced image. Keeping each page's records
 * as a valid batch lets materialization reuse the C core's apply; the batch was
 * validated when appended, so it takes aus_apply_verified.
 *
 * Pages are found through an open-addressing hash table of indices into the
 * entries array (linear probing, load factor at most 1/2). Entries are never
 * removed: a page coalesced to an image keeps its entry.
 */
#include "pagelog.h"

#include <stdlib.h>
#include <string.h>

#include "aurora.h"

#define NO_ENTRY UINT32_MAX
#define TABLE_MIN 64

typedef struct {
    uint64_t page_no;
    uint64_t last_lsn;  /* LSN of the newest record kept or folded */
    uint64_t image_lsn; /* LSN the image reflects; 0 with no image */
    uint8_t *records;   /* a batch of this page's records */
    size_t length;
    size_t capacity;
    size_t record_count;
    size_t incoming; /* bytes of the batch being appended; 0 between calls */
    uint8_t *image; /* page_size bytes, or NULL: zeros */
} page_entry;

struct aus_pagelog {
    uint32_t page_size;
    page_entry *entries;
    size_t entry_count;
    size_t entry_capacity;
    uint32_t *table; /* entry index or NO_ENTRY */
    size_t table_size;   /* a power of two */
    uint64_t record_count;
    uint64_t record_bytes;
    uint64_t image_count;
    uint64_t allocated; /* bytes of record batches and images */
};

static inline size_t slot_of(uint64_t page_no, size_t table_size) {
    uint64_t h = page_no * 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing */
    return (size_t)(h >> 17) & (table_size - 1);
}

static page_entry *find_entry(const aus_pagelog *log, uint64_t page_no) {
    size_t mask = log->table_size - 1;
    for (size_t slot = slot_of(page_no, log->table_size);; slot = (slot + 1) & mask) {
        uint32_t index = log->table[slot];
        if (index == NO_ENTRY) return NULL;
        if (log->entries[index].page_no == page_no) return &log->entries[index];
    }
}

static void table_insert(uint32_t *table, size_t table_size, uint64_t page_no,
                         uint32_t index) {
    size_t mask = table_size - 1;
    size_t slot = slot_of(page_no, table_size);
    while (table[slot] != NO_ENTRY) slot = (slot + 1) & mask;
    table[slot] = index;
}

/* Makes room for `extra` more entries; on failure nothing changes. */
static int reserve_entries(aus_pagelog *log, size_t extra) {
    size_t needed = log->entry_count + extra;
    if (needed >= NO_ENTRY) return AUS_E_NOMEM;
    if (needed > log->entry_capacity) {
        size_t capacity = log->entry_capacity ? log->entry_capacity : 16;
        while (capacity < needed) capacity *= 2;
        page_entry *entries = realloc(log->entries, capacity * sizeof *entries);
        if (!entries) return AUS_E_NOMEM;
        log->entries = entries;
        log->entry_capacity = capacity;
    }
    if (needed * 2 > log->table_size) {
        size_t size = log->table_size;
        while (needed * 2 > size) size *= 2;
        uint32_t *table = malloc(size * sizeof *table);
        if (!table) return AUS_E_NOMEM;
        memset(table, 0xFF, size * sizeof *table);
        for (size_t i = 0; i < log->entry_count; i++)
            table_insert(table, size, log->entries[i].page_no, (uint32_t)i);
        free(log->table);
        log->table = table;
        log->table_size = size;
    }
    return AUS_OK;
}

aus_pagelog *aus_pagelog_new(uint32_t page_size) {
    if (page_size < AUS_PAGE_SIZE_MIN || page_size > AUS_PAGE_SIZE_MAX ||
        (page_size & (page_size - 1)))
        return NULL;
    aus_pagelog *log = calloc(1, sizeof *log);
    if (!log) return NULL;
    log->page_size = page_size;
    log->table_size = TABLE_MIN;
    log->table = malloc(TABLE_MIN * sizeof *log->table);
    if (!log->table) {
        free(log);
        return NULL;
    }
    memset(log->table, 0xFF, TABLE_MIN * sizeof *log->table);
    return log;
}

void aus_pagelog_free(aus_pagelog *log) {
    if (!log) return;
    for (size_t i = 0; i < log->entry_count; i++) {
        free(log->entries[i].records);
        free(log->entries[i].image);
    }
    free(log->entries);
    free(log->table);
    free(log);
}

static inline uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline size_t record_bytes(const uint8_t *record) {
    uint32_t length;
    memcpy(&length, record + 36, sizeof length);
    return AUS_RECORD_HEADER_SIZE + (((size_t)length + AUS_RECORD_ALIGN - 1) &
                                     ~(size_t)(AUS_RECORD_ALIGN - 1));
}

int aus_pagelog_append(aus_pagelog *log, const uint8_t *buf, size_t len,
                       uint64_t *added, size_t *error_pos) {
    *added = 0;
    *error_pos = 0;
    size_t capacity = len / AUS_RECORD_HEADER_SIZE, count = 0;
    uint64_t *columns = malloc((capacity ? capacity : 1) * 2 * sizeof *columns);
    if (!columns) return AUS_E_NOMEM;
    /* slots[i] holds record i's page number, then its entry index. */
    uint64_t *slots = columns, *positions = columns + capacity;
    int status = aus_index(buf, len, log->page_size, capacity, slots, NULL, NULL,
                           NULL, positions, &count, error_pos);
    /* Reserve room for every record's page being new, so entries cannot fail. */
    if (status == AUS_OK) status = reserve_entries(log, count);
    if (status != AUS_OK) {
        free(columns);
        return status;
    }
    /* Pass 1: find or create each record's page and grow its batch to fit every
     * record of this call; growing early is harmless if a later one fails. */
    for (size_t i = 0; i < count; i++) {
        page_entry *entry = find_entry(log, slots[i]);
        if (!entry) {
            entry = &log->entries[log->entry_count];
            memset(entry, 0, sizeof *entry);
            entry->page_no = slots[i];
            table_insert(log->table, log->table_size, slots[i], (uint32_t)log->entry_count);
            log->entry_count++;
        }
        slots[i] = (uint64_t)(entry - log->entries);
        if (status != AUS_OK) continue;
        entry->incoming += (i + 1 < count ? positions[i + 1] : len) - positions[i];
        if (entry->length + entry->incoming > entry->capacity) {
            size_t grown = entry->capacity ? entry->capacity : 256;
            while (grown < entry->length + entry->incoming) grown *= 2;
            uint8_t *records = realloc(entry->records, grown);
            if (!records) {
                status = AUS_E_NOMEM;
                continue;
            }
            log->allocated += grown - entry->capacity;
            entry->records = records;
            entry->capacity = grown;
        }
    }
    /* Pass 2: copy the records (nothing can fail now), or only reset on failure. */
    for (size_t i = 0; i < count; i++) {
        page_entry *entry = &log->entries[slots[i]];
        entry->incoming = 0;
        if (status != AUS_OK) continue;
        const uint8_t *record = buf + positions[i];
        uint64_t lsn = load_u64(record);
        if (lsn <= entry->last_lsn) continue; /* duplicate or already folded */
        size_t size = record_bytes(record);
        memcpy(entry->records + entry->length, record, size);
        entry->length += size;
        entry->record_count++;
        entry->last_lsn = lsn;
        log->record_count++;
        log->record_bytes += size;
        (*added)++;
    }
    free(columns);
    return status;
}

int aus_pagelog_materialize(aus_pagelog *log, uint64_t page_no,
                            uint64_t lsn_bound, const uint64_t *annulled,
                            size_t n_annulled, uint8_t *out,
                            uint64_t *page_lsn, uint64_t *applied) {
    size_t error_pos = 0;
    *page_lsn = 0;
    *applied = 0;
    const page_entry *entry = find_entry(log, page_no);
    if (entry && entry->image_lsn > lsn_bound) return AUS_E_GONE;
    if (entry && entry->image) {
        memcpy(out, entry->image, log->page_size);
        *page_lsn = entry->image_lsn;
    } else {
        memset(out, 0, log->page_size);
    }
    if (!entry || entry->length == 0) return AUS_OK;
    return aus_apply_verified(entry->records, entry->length, log->page_size, &page_no, 1,
                     out, page_lsn, lsn_bound, annulled, n_annulled, applied,
                     &error_pos);
}

int aus_pagelog_coalesce(aus_pagelog *log, uint64_t lsn,
                         const uint64_t *annulled, size_t n_annulled,
                         uint64_t *folded) {
    *folded = 0;
    if (!aus_annulled_valid(annulled, n_annulled)) return AUS_E_ARGUMENT;
    /* Allocate every image first, so a failure leaves the log unchanged. */
    for (size_t i = 0; i < log->entry_count; i++) {
        page_entry *entry = &log->entries[i];
        if (entry->length == 0 || entry->image || load_u64(entry->records) > lsn)
            continue;
        entry->image = calloc(1, log->page_size);
        if (!entry->image) return AUS_E_NOMEM;
        log->image_count++;
        log->allocated += log->page_size;
    }
    for (size_t i = 0; i < log->entry_count; i++) {
        page_entry *entry = &log->entries[i];
        size_t prefix = 0, records = 0;
        uint64_t last = 0;
        while (prefix < entry->length && load_u64(entry->records + prefix) <= lsn) {
            last = load_u64(entry->records + prefix);
            prefix += record_bytes(entry->records + prefix);
            records++;
        }
        if (records == 0) continue;
        uint64_t page_lsn = entry->image_lsn, applied = 0;
        size_t error_pos = 0;
        int status = aus_apply_verified(entry->records, prefix, log->page_size,
                               &entry->page_no, 1, entry->image, &page_lsn, lsn,
                               annulled, n_annulled, &applied, &error_pos);
        if (status != AUS_OK) return status; /* arguments only: records were valid */
        entry->image_lsn = last;
        memmove(entry->records, entry->records + prefix, entry->length - prefix);
        entry->length -= prefix;
        entry->record_count -= records;
        log->record_count -= records;
        log->record_bytes -= prefix;
        *folded += records;
    }
    return AUS_OK;
}

int aus_pagelog_set_image(aus_pagelog *log, uint64_t page_no,
                          const uint8_t *image, uint64_t image_lsn) {
    page_entry *entry = find_entry(log, page_no);
    if (entry && (entry->length || entry->image)) return AUS_E_ARGUMENT;
    uint8_t *copy = malloc(log->page_size);
    if (!copy) return AUS_E_NOMEM;
    if (!entry) {
        if (reserve_entries(log, 1) != AUS_OK) {
            free(copy);
            return AUS_E_NOMEM;
        }
        entry = &log->entries[log->entry_count];
        memset(entry, 0, sizeof *entry);
        entry->page_no = page_no;
        table_insert(log->table, log->table_size, page_no, (uint32_t)log->entry_count);
        log->entry_count++;
    }
    memcpy(copy, image, log->page_size);
    entry->image = copy;
    entry->image_lsn = image_lsn;
    if (image_lsn > entry->last_lsn) entry->last_lsn = image_lsn;
    log->image_count++;
    log->allocated += log->page_size;
    return AUS_OK;
}

void aus_pagelog_stats(const aus_pagelog *log, uint64_t *stats) {
    uint64_t allocated = log->entry_capacity * sizeof(page_entry) +
                         log->table_size * sizeof(uint32_t) + log->allocated;
    stats[0] = log->entry_count;
    stats[1] = log->record_count;
    stats[2] = log->record_bytes;
    stats[3] = log->image_count;
    stats[4] = log->image_count * log->page_size;
    stats[5] = allocated;
}

int aus_pagelog_pages(const aus_pagelog *log, uint64_t *page_nos,
                      size_t capacity, size_t *count) {
    *count = log->entry_count;
    if (log->entry_count > capacity) return AUS_E_CAPACITY;
    for (size_t i = 0; i < log->entry_count; i++) page_nos[i] = log->entries[i].page_no;
    return AUS_OK;
}
