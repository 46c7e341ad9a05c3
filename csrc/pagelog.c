/*
 * Page log (pagelog.h): per page, a contiguous batch of that page's records
 * in LSN order plus an optional coalesced image. Keeping each page's records
 * as a valid batch lets materialization reuse the C core's apply; the batch was
 * validated when appended, so it takes aus_apply_verified.
 *
 * Pages are found through an open-addressing hash table of indices into the
 * entries array (linear probing, load factor at most 1/2). Entries are never
 * removed: a page coalesced to an image keeps its entry.
 *
 * An image is private (owned, freed with the entry) or shared: it points into
 * a block the caller lent with aus_pagelog_share, and the block's borrower
 * count includes the entry. Every write to an image goes through `owned`,
 * which is NULL for a shared image, so no path can write into a block: the
 * one writer, coalescing, first replaces a shared image by a private copy.
 *
 * Record batches come from malloc until the log holds ARENA_AFTER bytes, then
 * from the log's arena: chunks of the pool in chunks.h (touched ahead of need,
 * off the commit path), cut into blocks of 256 B << class, each class with a
 * free list. A batch larger than the largest class goes to malloc again. The
 * arena gives its chunks back when the log is freed.
 *
 * Memory, by owner:
 * - The log's own: the aus_pagelog, its entries and hash table, its block
 *   table, each entry's record batch (malloc or an arena block) and private
 *   image (`owned`, malloc). aus_pagelog_new allocates, aus_pagelog_free
 *   frees all of it; Python calls free through ffi.gc or PageLog.close.
 * - The pool's (chunks.c): arena chunks, taken with aus_chunk_take and given
 *   back with aus_chunk_give when the log is freed.
 * - Python's, lent for one call: every batch, page number list, annulled
 *   range list, image and output buffer (ffi.from_buffer, ffi.new). The log
 *   copies what it keeps.
 * - Python's, lent until given back: the blocks of aus_pagelog_share. A
 *   shared image points into one (`image` set, `owned` NULL, `block` its id);
 *   the log never writes or frees it, and Python keeps the block alive while
 *   aus_pagelog_borrowers counts an image in it (NativePageLog._blocks).
 * AUS_ASSERT(entry_valid(...)) checks these rules where entries change.
 */
#include "pagelog.h"

#include <stdlib.h>
#include <string.h>

#include "aurora.h"
#include "chunks.h"
#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(address, size) ASAN_POISON_MEMORY_REGION(address, size)
#define UNPOISON(address, size) ASAN_UNPOISON_MEMORY_REGION(address, size)
#else
#define POISON(address, size) ((void)(address), (void)(size))
#define UNPOISON(address, size) ((void)(address), (void)(size))
#endif

#define NO_ENTRY UINT32_MAX
#define TABLE_MIN 8 /* slots of a new log: most segments of a sparse volume hold a few pages */

typedef struct {
    uint64_t page_no;
    uint64_t last_lsn;  /* LSN of the newest record kept or folded */
    uint64_t image_lsn; /* LSN the image reflects; 0 with no image */
    uint8_t *records;   /* a batch of this page's records */
    size_t length;
    size_t capacity;
    size_t record_count;
    size_t incoming;      /* bytes of the batch being appended; 0 between calls */
    const uint8_t *image; /* page_size bytes the page reads as, or NULL: zeros */
    uint8_t *owned;       /* image when the log owns it; NULL when shared or none */
    uint32_t block;       /* id of the block a shared image points into; 0: none */
    uint8_t in_arena;     /* records is an arena block (else malloc's) */
    uint8_t referenced;   /* read or installed since the eviction hand last passed */
} page_entry;

#define ARENA_BLOCK_MIN 256
#define ARENA_CLASSES 9 /* blocks of 256 B to 64 KiB */
#define ARENA_AFTER AUS_CHUNK_BYTES
/* A chunk is cut into whole blocks of every class (arena_alloc). */
_Static_assert(AUS_CHUNK_BYTES % ((size_t)ARENA_BLOCK_MIN << (ARENA_CLASSES - 1)) == 0,
               "a chunk holds whole blocks of the largest class");

typedef struct {
    uint8_t *free[ARENA_CLASSES]; /* each free block holds the next one's address */
    uint8_t *bump;                /* the uncut rest of the newest chunk */
    size_t room;
    void **chunks;
    size_t chunk_count, chunk_capacity;
} record_arena;

typedef struct {
    uint64_t borrowers; /* entries whose image points into the block */
} shared_block;

struct aus_pagelog {
    uint32_t page_size;
    page_entry *entries;
    size_t entry_count;
    size_t entry_capacity;
    uint32_t *table; /* entry index or NO_ENTRY */
    size_t table_size;   /* a power of two */
    uint64_t record_count;
    uint64_t record_bytes;
    uint64_t image_count;  /* private and shared */
    uint64_t shared_count; /* images pointing into blocks */
    uint64_t allocated;    /* bytes of record batches and private images */
    shared_block *blocks;  /* block id i is blocks[i - 1] */
    size_t block_count;
    size_t block_capacity;
    size_t hand; /* the eviction sweep's position in entries (aus_pagelog_evict) */
    record_arena arena;
};

/*
 * The ownership rules of an entry (top of the file): a private image is
 * `owned`; a shared one is not and names a block with a borrower for it; a
 * batch fits its capacity; the image is never newer than the newest LSN.
 */
static inline int entry_valid(const aus_pagelog *log, const page_entry *entry) {
    const int shared = entry->image != NULL && entry->owned == NULL;
    return (entry->owned == NULL || entry->image == entry->owned) &&
           (shared == (entry->block != 0)) && entry->block <= log->block_count &&
           (entry->block == 0 || log->blocks[entry->block - 1].borrowers > 0) &&
           entry->length <= entry->capacity && entry->image_lsn <= entry->last_lsn &&
           (entry->records != NULL || entry->capacity == 0);
}

static inline void prefetch(const void *address) {
#if defined(__GNUC__)
    __builtin_prefetch(address);
#else
    (void)address;
#endif
}

static inline size_t slot_of(uint64_t page_no, size_t table_size) {
    uint64_t h = page_no * 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing */
    return (size_t)(h >> 17) & (table_size - 1);
}

static page_entry *find_entry(const aus_pagelog *log, uint64_t page_no) {
    size_t mask = log->table_size - 1;
    /* The table is at most half full, so the probe meets a free slot. */
    AUS_ASSERT(log->entry_count * 2 <= log->table_size);
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
    AUS_ASSERT(index < table_size / 2); /* entries fill at most half the table */
    while (table[slot] != NO_ENTRY) slot = (slot + 1) & mask;
    table[slot] = index;
}

/* Takes page_no's slot out of the table, shifting back the probe chain after
 * it (linear probing keeps no tombstones). */
static void table_remove(aus_pagelog *log, uint64_t page_no) {
    size_t mask = log->table_size - 1;
    size_t hole = slot_of(page_no, log->table_size);
    while (log->entries[log->table[hole]].page_no != page_no) hole = (hole + 1) & mask;
    for (size_t next = (hole + 1) & mask; log->table[next] != NO_ENTRY;
         next = (next + 1) & mask) {
        size_t home = slot_of(log->entries[log->table[next]].page_no, log->table_size);
        /* An entry may move back into the hole unless its home lies after the hole. */
        if (((next - home) & mask) >= ((next - hole) & mask)) {
            log->table[hole] = log->table[next];
            hole = next;
        }
    }
    log->table[hole] = NO_ENTRY;
}

static page_entry *add_entry(aus_pagelog *log, uint64_t page_no) {
    /* reserve_entries made room for this entry and kept the table half empty. */
    AUS_ASSERT(log->entry_count < log->entry_capacity);
    AUS_ASSERT((log->entry_count + 1) * 2 <= log->table_size);
    page_entry *entry = &log->entries[log->entry_count];
    memset(entry, 0, sizeof *entry);
    entry->page_no = page_no;
    table_insert(log->table, log->table_size, page_no, (uint32_t)log->entry_count);
    log->entry_count++;
    return entry;
}

/* Makes room for `extra` more entries; on failure nothing changes. */
static int reserve_entries(aus_pagelog *log, size_t extra) {
    size_t needed = log->entry_count + extra;
    if (needed >= NO_ENTRY) return AUS_E_NOMEM;
    if (needed > log->entry_capacity) {
        size_t capacity = log->entry_capacity ? log->entry_capacity : 2;
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

/* The class of a block of capacity bytes, or -1 if no class fits it exactly. */
static int arena_class(size_t capacity) {
    for (int class = 0; class < ARENA_CLASSES; class++)
        if ((size_t)ARENA_BLOCK_MIN << class == capacity) return class;
    return -1;
}

static void arena_push(record_arena *arena, uint8_t *block, int class) {
    AUS_ASSERT(class >= 0 && class < ARENA_CLASSES); /* arena blocks have class sizes */
    UNPOISON(block, sizeof arena->free[class]);
    memcpy(block, &arena->free[class], sizeof arena->free[class]);
    POISON(block + sizeof arena->free[class],
           ((size_t)ARENA_BLOCK_MIN << class) - sizeof arena->free[class]);
    arena->free[class] = block;
}

/* A block of class `class`, or NULL with no memory (the arena unchanged). */
static uint8_t *arena_alloc(aus_pagelog *log, int class) {
    record_arena *arena = &log->arena;
    size_t size = (size_t)ARENA_BLOCK_MIN << class;
    uint8_t *block = arena->free[class];
    if (block) {
        UNPOISON(block, size);
        memcpy(&arena->free[class], block, sizeof arena->free[class]);
        return block;
    }
    if (arena->room < size) {
        if (arena->chunk_count == arena->chunk_capacity) {
            size_t capacity = arena->chunk_capacity ? arena->chunk_capacity * 2 : 8;
            void **chunks = realloc(arena->chunks, capacity * sizeof *chunks);
            if (!chunks) return NULL;
            arena->chunks = chunks;
            arena->chunk_capacity = capacity;
        }
        uint8_t *chunk = aus_chunk_take();
        if (!chunk) return NULL;
        /* The old chunk's rest becomes free blocks, largest first: block sizes
         * and the chunk size are multiples of the smallest block. */
        for (int rest = ARENA_CLASSES - 1; rest >= 0 && arena->room;) {
            size_t piece = (size_t)ARENA_BLOCK_MIN << rest;
            if (arena->room < piece) {
                rest--;
                continue;
            }
            arena_push(arena, arena->bump, rest);
            arena->bump += piece;
            arena->room -= piece;
        }
        arena->chunks[arena->chunk_count++] = chunk;
        log->allocated += AUS_CHUNK_BYTES;
        POISON(chunk, AUS_CHUNK_BYTES);
        arena->bump = chunk;
        arena->room = AUS_CHUNK_BYTES;
    }
    AUS_ASSERT(arena->room >= size);
    block = arena->bump;
    arena->bump += size;
    arena->room -= size;
    UNPOISON(block, size);
    return block;
}

/* Frees an entry's record batch, wherever it came from. */
static void release_records(aus_pagelog *log, page_entry *entry) {
    if (!entry->records) return;
    if (entry->in_arena) {
        arena_push(&log->arena, entry->records, arena_class(entry->capacity));
    } else {
        free(entry->records);
        log->allocated -= entry->capacity;
    }
    entry->records = NULL;
    entry->in_arena = 0;
    entry->capacity = 0;
}

/* Gives the entry's batch room for `grown` bytes, keeping its records; on
 * failure (AUS_E_NOMEM) nothing changes. */
static int grow_records(aus_pagelog *log, page_entry *entry, size_t grown) {
    int class = arena_class(grown);
    int in_arena = class >= 0 && (entry->in_arena || log->allocated >= ARENA_AFTER);
    if (!in_arena && !entry->in_arena) {
        uint8_t *records = realloc(entry->records, grown);
        if (!records) return AUS_E_NOMEM;
        log->allocated += grown - entry->capacity;
        entry->records = records;
        entry->capacity = grown;
        return AUS_OK;
    }
    uint8_t *records = in_arena ? arena_alloc(log, class) : malloc(grown);
    if (!records) return AUS_E_NOMEM;
    if (entry->length) memcpy(records, entry->records, entry->length);
    release_records(log, entry);
    if (!in_arena) log->allocated += grown;
    entry->records = records;
    entry->capacity = grown;
    entry->in_arena = (uint8_t)in_arena;
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
        if (!log->entries[i].in_arena) free(log->entries[i].records);
        free(log->entries[i].owned); /* a shared image is the lender's */
    }
    for (size_t i = 0; i < log->arena.chunk_count; i++) {
        UNPOISON(log->arena.chunks[i], AUS_CHUNK_BYTES);
        aus_chunk_give(log->arena.chunks[i]);
    }
    free(log->arena.chunks);
    free(log->entries);
    free(log->table);
    free(log->blocks);
    free(log);
}

int aus_pagelog_append(aus_pagelog *log, const uint8_t *buf, size_t len, uint64_t page_lo,
                       uint64_t page_hi, uint64_t *added, size_t *error_pos) {
    *added = 0;
    *error_pos = 0;
    size_t capacity = len / AUS_RECORD_HEADER_SIZE, count = 0;
    uint64_t *columns = malloc((capacity ? capacity : 1) * 2 * sizeof *columns);
    if (!columns) return AUS_E_NOMEM;
    /* slots[i] holds record i's page number, then its entry index. */
    uint64_t *slots = columns, *positions = columns + capacity;
    int status = aus_index(buf, len, log->page_size, capacity, slots, NULL, NULL,
                           NULL, positions, &count, error_pos);
    /* Only the records of pages in [page_lo, page_hi) are kept (the batch was
     * validated whole). */
    if (status == AUS_OK && (page_lo > 0 || page_hi < UINT64_MAX)) {
        size_t kept = 0;
        for (size_t i = 0; i < count; i++) {
            if (slots[i] < page_lo || slots[i] >= page_hi) continue;
            slots[kept] = slots[i];
            positions[kept++] = positions[i];
        }
        count = kept;
    }
    /* Reserve room for every record's page being new, so entries cannot fail. */
    if (status == AUS_OK) status = reserve_entries(log, count);
    if (status != AUS_OK) {
        free(columns);
        return status;
    }
    /* The log's table and entries are usually cold in the cache when a batch
     * arrives (the caller did other work since the last one): ask for every
     * record's table slot, then for the entries they name, so that the misses
     * overlap instead of each lookup waiting for two in a row. */
    for (size_t i = 0; i < count; i++) prefetch(&log->table[slot_of(slots[i], log->table_size)]);
    for (size_t i = 0; i < count; i++) {
        uint32_t index = log->table[slot_of(slots[i], log->table_size)];
        if (index != NO_ENTRY) prefetch(&log->entries[index]);
    }
    /* Pass 1: find or create each record's page and grow its batch to fit every
     * record of this call; growing early is harmless if a later one fails. */
    for (size_t i = 0; i < count; i++) {
        page_entry *entry = find_entry(log, slots[i]);
        if (!entry) entry = add_entry(log, slots[i]);
        slots[i] = (uint64_t)(entry - log->entries);
        if (status != AUS_OK) continue;
        entry->incoming += aus_record_size(buf + positions[i]);
        if (entry->length + entry->incoming > entry->capacity) {
            size_t needed = entry->length + entry->incoming;
            size_t grown = entry->capacity ? entry->capacity : ARENA_BLOCK_MIN;
            while (grown < needed) grown *= 2;
            if (!entry->capacity && log->allocated < ARENA_AFTER)
                grown = (needed + 63) & ~(size_t)63; /* a first batch from malloc: its size */
            status = grow_records(log, entry, grown);
        }
    }
    /* Where pass 2 writes: the end of each page's batch, as cold as its entry was. */
    for (size_t i = 0; i < count; i++) {
        const page_entry *entry = &log->entries[slots[i]];
        if (entry->records) prefetch(entry->records + entry->length);
    }
    /* Pass 2: copy the records (nothing can fail now), or only reset on failure. */
    uint64_t previous = 0; /* aus_index validated the batch: its LSNs ascend */
    for (size_t i = 0; i < count; i++) {
        page_entry *entry = &log->entries[slots[i]];
        entry->incoming = 0;
        if (status != AUS_OK) continue;
        const uint8_t *record = buf + positions[i];
        uint64_t lsn = aus_record_lsn(record);
        AUS_ASSERT(lsn > previous && positions[i] < len);
        previous = lsn;
        if (lsn <= entry->last_lsn) continue; /* duplicate or already folded */
        size_t size = aus_record_size(record);
        AUS_ASSERT(size <= len - positions[i]);
        AUS_ASSERT(entry->length + size <= entry->capacity); /* pass 1 grew it */
        memcpy(entry->records + entry->length, record, size);
        entry->length += size;
        entry->record_count++;
        entry->last_lsn = lsn;
        log->record_count++;
        log->record_bytes += size;
        (*added)++;
        AUS_ASSERT(entry_valid(log, entry));
    }
    free(columns);
    return status;
}

/*
 * Position of the page's last record that replaces the whole page (PAGE or
 * ZERO) at or below lsn_bound and outside the annulled ranges, or the length
 * of its records if none does: nothing before that record shows in the page,
 * so materializing starts there. The records were validated when appended.
 */
static size_t last_whole_page(const page_entry *entry, uint64_t lsn_bound,
                              const uint64_t *annulled, size_t n_annulled) {
    size_t found = entry->length, position = 0, range = 0;
    while (position < entry->length) {
        const uint8_t *record = entry->records + position;
        uint64_t lsn = aus_record_lsn(record);
        if (lsn > lsn_bound) break;
        while (range < n_annulled && annulled[2 * range + 1] < lsn) range++;
        int hidden = range < n_annulled && annulled[2 * range] < lsn;
        uint8_t kind = aus_record_kind(record);
        if (!hidden && (kind == AUS_KIND_PAGE || kind == AUS_KIND_ZERO)) found = position;
        position += aus_record_size(record);
    }
    return found;
}

int aus_pagelog_materialize(aus_pagelog *log, uint64_t page_no,
                            uint64_t lsn_bound, const uint64_t *annulled,
                            size_t n_annulled, uint8_t *out,
                            uint64_t *page_lsn, uint64_t *applied) {
    size_t error_pos = 0, start = 0;
    *page_lsn = 0;
    *applied = 0;
    page_entry *entry = find_entry(log, page_no);
    AUS_ASSERT(entry == NULL || entry_valid(log, entry));
    if (entry) entry->referenced = 1;
    if (entry && entry->image_lsn > lsn_bound) return AUS_E_GONE;
    if (entry && entry->length) {
        if (!aus_annulled_valid(annulled, n_annulled)) return AUS_E_ARGUMENT;
        start = last_whole_page(entry, lsn_bound, annulled, n_annulled);
    }
    if (entry && start < entry->length) {
        *page_lsn = entry->image_lsn; /* the record at start overwrites the page */
    } else if (entry && entry->image) {
        memcpy(out, entry->image, log->page_size);
        *page_lsn = entry->image_lsn;
        start = 0;
    } else {
        memset(out, 0, log->page_size);
        start = 0;
    }
    if (!entry || entry->length == 0) return AUS_OK;
    AUS_ASSERT(start < entry->length);
    const int status =
        aus_apply_verified(entry->records + start, entry->length - start, log->page_size,
                           &page_no, 1, out, page_lsn, lsn_bound, annulled, n_annulled,
                           applied, &error_pos);
    /* The page's records were validated when appended, the ranges above. */
    AUS_ASSERT(status == AUS_OK);
    return status;
}

int aus_pagelog_materialize_many(aus_pagelog *log, const uint64_t *page_nos,
                                 size_t count, uint64_t lsn_bound,
                                 const uint64_t *annulled, size_t n_annulled,
                                 uint8_t *out, uint64_t *page_lsns,
                                 uint64_t *applied, size_t *error_index) {
    *applied = 0;
    *error_index = 0;
    if (!aus_annulled_valid(annulled, n_annulled)) return AUS_E_ARGUMENT;
    for (size_t i = 0; i < count; i++) {
        uint64_t page_applied = 0;
        int status = aus_pagelog_materialize(log, page_nos[i], lsn_bound, annulled,
                                             n_annulled, out + i * log->page_size,
                                             &page_lsns[i], &page_applied);
        *applied += page_applied;
        if (status != AUS_OK) {
            *error_index = i;
            return status;
        }
    }
    return AUS_OK;
}

int aus_pagelog_coalesce(aus_pagelog *log, uint64_t lsn,
                         const uint64_t *annulled, size_t n_annulled,
                         uint64_t *folded) {
    *folded = 0;
    if (!aus_annulled_valid(annulled, n_annulled)) return AUS_E_ARGUMENT;
    /* Give every image to fold into a private copy first, so a failure leaves
     * the log reading as before: a new image is zeros, a copy equals its block. */
    for (size_t i = 0; i < log->entry_count; i++) {
        page_entry *entry = &log->entries[i];
        if (entry->length == 0 || entry->owned || aus_record_lsn(entry->records) > lsn)
            continue;
        uint8_t *own = entry->image ? malloc(log->page_size) : calloc(1, log->page_size);
        if (!own) return AUS_E_NOMEM;
        if (entry->image) {
            AUS_ASSERT(entry->block != 0 && log->blocks[entry->block - 1].borrowers > 0);
            AUS_ASSERT(log->shared_count > 0);
            memcpy(own, entry->image, log->page_size);
            log->blocks[entry->block - 1].borrowers--;
            log->shared_count--;
            entry->block = 0;
        } else {
            log->image_count++;
        }
        entry->image = entry->owned = own;
        log->allocated += log->page_size;
        AUS_ASSERT(entry_valid(log, entry));
    }
    for (size_t i = 0; i < log->entry_count; i++) {
        page_entry *entry = &log->entries[i];
        size_t prefix = 0, records = 0;
        uint64_t last = 0;
        while (prefix < entry->length && aus_record_lsn(entry->records + prefix) <= lsn) {
            last = aus_record_lsn(entry->records + prefix);
            prefix += aus_record_size(entry->records + prefix);
            records++;
        }
        if (records == 0) continue;
        /* Folding writes the image: only ever one the log owns, never a block. */
        AUS_ASSERT(entry->owned != NULL && entry->image == entry->owned);
        AUS_ASSERT(prefix <= entry->length && last <= entry->last_lsn);
        uint64_t page_lsn = entry->image_lsn, applied = 0;
        size_t error_pos = 0;
        int status = aus_apply_verified(entry->records, prefix, log->page_size,
                               &entry->page_no, 1, entry->owned, &page_lsn, lsn,
                               annulled, n_annulled, &applied, &error_pos);
        AUS_ASSERT(status == AUS_OK); /* records valid when appended, ranges above */
        if (status != AUS_OK) return status;
        entry->image_lsn = last;
        memmove(entry->records, entry->records + prefix, entry->length - prefix);
        entry->length -= prefix;
        /* A page whose records are all folded keeps no batch: most pages of a large
         * log are images alone, and their batches would hold the arena's memory. */
        if (entry->length == 0) release_records(log, entry);
        entry->record_count -= records;
        log->record_count -= records;
        log->record_bytes -= prefix;
        *folded += records;
        AUS_ASSERT(entry_valid(log, entry));
    }
    return AUS_OK;
}

int aus_pagelog_set_image(aus_pagelog *log, uint64_t page_no,
                          const uint8_t *image, uint64_t image_lsn) {
    page_entry *entry = find_entry(log, page_no);
    /* Records the page holds must all be newer than the image (a page read back
     * from a page store under the records that came after it). */
    if (entry && (entry->image || (entry->length && aus_record_lsn(entry->records) <= image_lsn)))
        return AUS_E_ARGUMENT;
    uint8_t *copy = malloc(log->page_size);
    if (!copy) return AUS_E_NOMEM;
    if (!entry) {
        if (reserve_entries(log, 1) != AUS_OK) {
            free(copy);
            return AUS_E_NOMEM;
        }
        entry = add_entry(log, page_no);
    }
    memcpy(copy, image, log->page_size);
    entry->image = entry->owned = copy;
    entry->image_lsn = image_lsn;
    entry->referenced = 1;
    if (image_lsn > entry->last_lsn) entry->last_lsn = image_lsn;
    log->image_count++;
    log->allocated += log->page_size;
    AUS_ASSERT(entry_valid(log, entry));
    return AUS_OK;
}

int aus_pagelog_share(aus_pagelog *log, const uint8_t *block, size_t block_length,
                      const uint64_t *page_nos, size_t count, uint64_t image_lsn,
                      int fill, uint32_t *block_id, uint64_t *installed) {
    *block_id = 0;
    *installed = 0;
    if (count > block_length / log->page_size || !aus_page_nos_ascending(page_nos, count))
        return AUS_E_ARGUMENT;
    /* Check every page and allocate everything first: nothing can fail after. */
    size_t fresh = 0;
    for (size_t i = 0; i < count; i++) {
        const page_entry *entry = find_entry(log, page_nos[i]);
        if (!entry)
            fresh++;
        else if ((entry->length || entry->image) && !fill)
            return AUS_E_ARGUMENT;
    }
    if (log->block_count >= UINT32_MAX - 1) return AUS_E_NOMEM;
    if (log->block_count == log->block_capacity) {
        size_t capacity = log->block_capacity ? log->block_capacity * 2 : 4;
        shared_block *blocks = realloc(log->blocks, capacity * sizeof *blocks);
        if (!blocks) return AUS_E_NOMEM;
        log->blocks = blocks;
        log->block_capacity = capacity;
    }
    int status = reserve_entries(log, fresh);
    if (status != AUS_OK) return status;
    uint32_t id = (uint32_t)++log->block_count;
    shared_block *shared = &log->blocks[id - 1];
    shared->borrowers = 0;
    for (size_t i = 0; i < count; i++) {
        page_entry *entry = find_entry(log, page_nos[i]);
        if (!entry)
            entry = add_entry(log, page_nos[i]);
        else if (entry->length || entry->image)
            continue; /* fill: an earlier layer holds this page */
        AUS_ASSERT(entry->owned == NULL && entry->block == 0);
        entry->image = block + i * log->page_size; /* inside: count fits block_length */
        entry->block = id;
        entry->image_lsn = image_lsn;
        if (image_lsn > entry->last_lsn) entry->last_lsn = image_lsn;
        entry->referenced = 1;
        shared->borrowers++;
        AUS_ASSERT(entry_valid(log, entry));
    }
    log->image_count += shared->borrowers;
    log->shared_count += shared->borrowers;
    *block_id = id;
    *installed = shared->borrowers;
    return AUS_OK;
}

int aus_pagelog_borrowers(const aus_pagelog *log, uint32_t block_id,
                          uint64_t *borrowers) {
    *borrowers = 0;
    if (block_id == 0 || block_id > log->block_count) return AUS_E_ARGUMENT;
    *borrowers = log->blocks[block_id - 1].borrowers;
    return AUS_OK;
}

void aus_pagelog_stats(const aus_pagelog *log, uint64_t *stats) {
    AUS_ASSERT(log->shared_count <= log->image_count);
    uint64_t allocated = log->entry_capacity * sizeof(page_entry) +
                         log->table_size * sizeof(uint32_t) +
                         log->block_capacity * sizeof(shared_block) + log->allocated;
    stats[0] = log->entry_count;
    stats[1] = log->record_count;
    stats[2] = log->record_bytes;
    stats[3] = log->image_count;
    stats[4] = log->image_count * log->page_size;
    stats[5] = allocated;
    stats[6] = log->shared_count;
    stats[7] = log->shared_count * log->page_size;
}

/* Forgets entry `index` whole (its image and records released); the last entry
 * takes its place in entries. */
static void remove_entry(aus_pagelog *log, size_t index) {
    page_entry *entry = &log->entries[index];
    AUS_ASSERT(entry_valid(log, entry));
    if (entry->owned) {
        free(entry->owned);
        log->allocated -= log->page_size;
    } else if (entry->block) {
        AUS_ASSERT(log->blocks[entry->block - 1].borrowers > 0 && log->shared_count > 0);
        log->blocks[entry->block - 1].borrowers--;
        log->shared_count--;
    }
    if (entry->image) log->image_count--;
    log->record_count -= entry->record_count;
    log->record_bytes -= entry->length;
    release_records(log, entry);
    table_remove(log, entry->page_no);
    size_t last = log->entry_count - 1;
    if (index != last) {
        size_t mask = log->table_size - 1;
        size_t slot = slot_of(log->entries[last].page_no, log->table_size);
        while (log->table[slot] != last) slot = (slot + 1) & mask;
        log->table[slot] = (uint32_t)index;
        log->entries[index] = log->entries[last];
    }
    log->entry_count = last;
}

int aus_pagelog_forget(aus_pagelog *log, const uint64_t *page_nos, size_t count,
                       uint64_t *forgotten) {
    *forgotten = 0;
    for (size_t i = 0; i < count; i++) {
        const page_entry *entry = find_entry(log, page_nos[i]);
        if (!entry) continue;
        remove_entry(log, (size_t)(entry - log->entries));
        (*forgotten)++;
    }
    if (log->hand >= log->entry_count) log->hand = 0;
    return AUS_OK;
}

int aus_pagelog_evict(aus_pagelog *log, uint64_t clean_lsn, uint64_t want_bytes,
                      uint64_t *dropped) {
    *dropped = 0;
    /* Two turns of the hand: the first may only clear reference bits. */
    size_t steps = 2 * log->entry_count;
    while (*dropped < want_bytes && steps > 0 && log->entry_count > 0) {
        steps--;
        if (log->hand >= log->entry_count) log->hand = 0;
        page_entry *entry = &log->entries[log->hand];
        if (!entry->image || entry->length || entry->image_lsn > clean_lsn) {
            log->hand++;
            continue;
        }
        if (entry->referenced) {
            entry->referenced = 0;
            log->hand++;
            continue;
        }
        remove_entry(log, log->hand); /* the hand now points at the entry moved in */
        *dropped += log->page_size;
    }
    return AUS_OK;
}

int aus_pagelog_missing(const aus_pagelog *log, const uint64_t *page_nos, size_t count,
                        uint64_t *out, size_t *found) {
    size_t missing = 0;
    for (size_t i = 0; i < count; i++) {
        const page_entry *entry = find_entry(log, page_nos[i]);
        if (!entry || !entry->image) out[missing++] = page_nos[i];
    }
    *found = missing;
    return AUS_OK;
}

int aus_pagelog_pages(const aus_pagelog *log, int which, uint64_t *page_nos,
                      size_t capacity, size_t *count) {
    if (which != AUS_PAGES_ALL && which != AUS_PAGES_WITH_RECORDS) return AUS_E_ARGUMENT;
    size_t found = 0;
    for (size_t i = 0; i < log->entry_count; i++)
        if (which == AUS_PAGES_ALL || log->entries[i].length) found++;
    *count = found;
    if (found > capacity) return AUS_E_CAPACITY;
    found = 0;
    for (size_t i = 0; i < log->entry_count; i++)
        if (which == AUS_PAGES_ALL || log->entries[i].length)
            page_nos[found++] = log->entries[i].page_no;
    return AUS_OK;
}
