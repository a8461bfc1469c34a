// Drives a Keel cluster with kafkajs (pure JavaScript, its own protocol code).
//
// What is verified, and by which part of kafkajs (everything here is kafkajs):
// - admin: createTopics (12 partitions), fetchTopicMetadata, fetchTopicOffsets
//   (low and high watermarks), fetchTopicOffsetsByTimestamp, deleteTopics and
//   listTopics (the topic is gone).
// - an idempotent producer (acks=-1) with codecs none, gzip, snappy
//   (kafkajs-snappy) and lz4 (kafkajs-lz4): keyed records (some keys empty,
//   some values null) with two headers (binary bytes and an empty value: kafkajs 2.2.4 throws
//   on a null header value when sizing the record) and
//   explicit, distinct, increasing create times; each acknowledged base
//   offset must be the next offset of its partition.
//   zstd is not tested: @kafkajs/zstd needs the native cppzst module, whose
//   node-gyp build fails against this Node's headers (C++17 needed).
// - reading back: with kafkajs's own lower-level Fetch (the cluster's broker
//   objects, as its consumer does internally), so every batch can be checked
//   as stored; its group Consumer is tested in group.js: every
//   partition from offset 0 to the high watermark, each record byte for byte
//   (key, value, headers in order, timestamp, CreateTime), offsets 0, 1, 2, ...,
//   and every batch still carrying the idempotent producer's id.
// - ListOffsets by timestamp: the first record at or after the time; for a
//   time after every record kafkajs reports the high watermark (it turns
//   Kafka's -1 into that).
//
// Records: 20 000, or KEEL_CLIENT_RECORDS. Exits non-zero with a one-line
// message on the first mismatch.
//
// Usage: node roundtrip.js BOOTSTRAP

'use strict'

const crypto = require('crypto')
const { Kafka, CompressionTypes, CompressionCodecs, Partitioners, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec

const bootstrap = process.argv[2]
if (!bootstrap) {
  console.error('usage: node roundtrip.js BOOTSTRAP')
  process.exit(2)
}
const PARTITIONS = 12
const count = parseInt(process.env.KEEL_CLIENT_RECORDS || '20000', 10)
const BASE_TS = 1700000000000
const STEP_TS = 3
const topic = `kafkajs-${crypto.randomBytes(4).toString('hex')}`
const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4],
]

class Mismatch extends Error {}
const fail = message => {
  throw new Mismatch(message)
}

// A small seeded generator (mulberry32), so every run writes the same data.
const rng = (seed => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
})(7)
const randint = (low, high) => low + Math.floor(rng() * (high - low + 1))
const randbytes = n => {
  const bytes = Buffer.alloc(n)
  for (let i = 0; i < n; i++) bytes[i] = randint(0, 255)
  return bytes
}

const records = []
for (let i = 0; i < count; i++) {
  const key = i % 251 === 3 ? Buffer.alloc(0) : Buffer.concat([Buffer.from(`key-${randint(0, 999)}`), randbytes(1)])
  let value
  if (i % 97 === 5) {
    value = null
  } else if (i % 13 === 0) {
    value = Buffer.alloc(0)
  } else {
    const size = randint(1, 4096)
    if (rng() < 0.5) {
      value = randbytes(size)
    } else {
      const word = randbytes(randint(1, 24))
      value = Buffer.alloc(size)
      for (let j = 0; j < size; j++) value[j] = word[j % word.length]
    }
  }
  const headers = { bin: Buffer.concat([Buffer.from([0x00, 0xff]), randbytes(randint(0, 30))]), empty: Buffer.alloc(0) }
  records.push({ key, value, headers, timestamp: String(BASE_TS + i * STEP_TS), partition: randint(0, PARTITIONS - 1) })
}

const sameBytes = (a, b) => (a === null || b === null ? a === b : Buffer.isBuffer(a) && a.equals(b))
const show = b => (b === null ? 'null' : `${b.length} bytes`)

async function main() {
  const started = Date.now()
  const kafka = new Kafka({ clientId: 'keel-kafkajs', brokers: bootstrap.split(','), logLevel: logLevel.WARN })
  const admin = kafka.admin()
  await admin.connect()
  const created = await admin.createTopics({
    // The records' timestamps are years old: without retention.ms=-1,
    // retention (7 days by default) would delete them once uploaded, as Kafka would.
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '-1' }] }],
    waitForLeaders: true,
  })
  if (created !== true) fail(`createTopics answered ${created}`)
  const { topics: described } = await admin.fetchTopicMetadata({ topics: [topic] })
  if (described.length !== 1 || described[0].partitions.length !== PARTITIONS) {
    fail(`fetchTopicMetadata after create: ${JSON.stringify(described)}`)
  }

  // Produce: a quarter of the records with each codec, in chunks; each send
  // is awaited, so every partition holds its records in production order.
  const expected = Array.from({ length: PARTITIONS }, () => [])
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner, // records name their partition
  })
  await producer.connect()
  const share = Math.ceil(count / CODECS.length)
  for (let c = 0; c < CODECS.length; c++) {
    const [name, compression] = CODECS[c]
    for (let start = c * share; start < Math.min((c + 1) * share, count); start += 500) {
      const indices = []
      for (let i = start; i < Math.min(start + 500, (c + 1) * share, count); i++) indices.push(i)
      const answers = await producer.send({
        topic,
        acks: -1,
        compression,
        messages: indices.map(i => {
          const { key, value, headers, timestamp, partition } = records[i]
          return { key, value, headers, timestamp, partition }
        }),
      })
      for (const answer of answers) {
        const partition = answer.partition
        const next = expected[partition].length
        if (answer.errorCode !== 0 || parseInt(answer.baseOffset, 10) !== next) {
          fail(`${name}: partition ${partition} acknowledged at ${answer.baseOffset} (error ${answer.errorCode}), expected ${next}`)
        }
      }
      for (const i of indices) expected[records[i].partition].push(i)
    }
  }
  await producer.disconnect()
  const produced = Date.now()

  const offsets = await admin.fetchTopicOffsets(topic)
  for (const { partition, low, high } of offsets) {
    if (low !== '0' || parseInt(high, 10) !== expected[partition].length) {
      fail(`partition ${partition}: watermarks (${low}, ${high}), expected (0, ${expected[partition].length})`)
    }
  }

  // Read back with kafkajs's lower-level Fetch (no group needed).
  const createCluster = kafka[Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')]
  const cluster = createCluster({ allowAutoTopicCreation: false })
  await cluster.connect()
  await cluster.addTargetTopic(topic)
  await cluster.refreshMetadata()
  const allPartitions = Array.from({ length: PARTITIONS }, (_, p) => p)
  const leaders = cluster.findLeaderForPartitions(topic, allPartitions)
  const next = new Array(PARTITIONS).fill(0)
  const deadline = Date.now() + 60000
  for (const [nodeId, partitions] of Object.entries(leaders)) {
    const broker = await cluster.findBroker({ nodeId })
    for (;;) {
      const wanted = partitions.filter(p => next[p] < expected[p].length)
      if (wanted.length === 0) break
      if (Date.now() > deadline) fail('records not all read within 60 s')
      const { responses } = await broker.fetch({
        replicaId: -1,
        isolationLevel: 0,
        maxWaitTime: 100,
        minBytes: 1,
        maxBytes: 4 << 20,
        topics: [{ topic, partitions: wanted.map(p => ({ partition: p, fetchOffset: String(next[p]), maxBytes: 1 << 20 })) }],
      })
      for (const { partitions: answers } of responses) {
        for (const { partition: p, errorCode, highWatermark, messages } of answers) {
          if (errorCode !== 0) fail(`fetch of partition ${p} at ${next[p]}: error code ${errorCode}`)
          if (parseInt(highWatermark, 10) !== expected[p].length) {
            fail(`fetch of partition ${p}: high watermark ${highWatermark}, expected ${expected[p].length}`)
          }
          for (const message of messages) {
            const offset = parseInt(message.offset, 10)
            // A fetch answers whole batches: skip what was read already.
            if (offset < next[p]) continue
            const where = `${p}/${offset}`
            if (offset !== next[p]) fail(`${where}: expected offset ${next[p]} next (offsets must be consecutive from 0)`)
            if (offset >= expected[p].length) fail(`${where}: beyond the ${expected[p].length} records produced`)
            const want = records[expected[p][offset]]
            if (!sameBytes(message.key, want.key)) fail(`${where}: key ${show(message.key)}, expected ${show(want.key)}`)
            if (!sameBytes(message.value, want.value)) {
              fail(`${where}: value differs (${show(message.value)}, expected ${show(want.value)})`)
            }
            const names = Object.keys(message.headers)
            if (
              names.join(',') !== 'bin,empty' ||
              !sameBytes(message.headers.bin, want.headers.bin) ||
              !sameBytes(message.headers.empty, want.headers.empty)
            ) {
              fail(`${where}: headers ${JSON.stringify(message.headers)} differ`)
            }
            if (message.timestamp !== want.timestamp || message.batchContext.timestampType !== 0) {
              fail(`${where}: timestamp ${message.timestamp} (type ${message.batchContext.timestampType}), expected ${want.timestamp} (CreateTime)`)
            }
            if (parseInt(message.batchContext.producerId, 10) < 0) {
              fail(`${where}: batch lost the idempotent producer id (${message.batchContext.producerId})`)
            }
            next[p]++
          }
        }
      }
    }
  }
  await cluster.disconnect()
  const consumed = Date.now()

  // ListOffsets by timestamp: the first record at or after the time; after
  // every record kafkajs reports the high watermark.
  const times = expected.map(indices => indices.map(i => BASE_TS + i * STEP_TS))
  const firstAtOrAfter = (ts, at) => {
    let low = 0
    let high = ts.length
    while (low < high) {
      const mid = (low + high) >> 1
      if (ts[mid] < at) low = mid + 1
      else high = mid
    }
    return low
  }
  const probe = times[0]
  const targets = [
    ['before every record', BASE_TS - 1000],
    ['a third of the way, just before a record of partition 0', probe[Math.floor(probe.length / 3)] - 1],
    ['a middle record of partition 0', probe[Math.floor(probe.length / 2)]],
    ['just after a record two thirds into partition 0', probe[Math.floor((2 * probe.length) / 3)] + 1],
    ['after every record', BASE_TS + count * STEP_TS],
  ]
  for (const [what, at] of targets) {
    const answers = await admin.fetchTopicOffsetsByTimestamp(topic, at)
    for (const { partition, offset } of answers) {
      const want = firstAtOrAfter(times[partition], at) // the end offset when none is at or after
      if (parseInt(offset, 10) !== want) {
        fail(`fetchTopicOffsetsByTimestamp (${what}, time ${at}) on partition ${partition}: offset ${offset}, expected ${want}`)
      }
    }
  }

  if ((await admin.deleteTopics({ topics: [topic], timeout: 30000 })) !== undefined) fail('deleteTopics answered something')
  const until = Date.now() + 15000
  while ((await admin.listTopics()).includes(topic)) {
    if (Date.now() > until) fail(`topic ${topic} still listed 15 s after it was deleted`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  await admin.disconnect()
  console.log(
    `ok: ${count} records with ${CODECS.map(([name]) => name).join(', ')}; produced in ${(produced - started) / 1000} s, ` +
      `read in ${(consumed - produced) / 1000} s, total ${(Date.now() - started) / 1000} s`
  )
}

main().then(
  () => process.exit(0),
  error => {
    console.error(`kafkajs roundtrip: ${error instanceof Mismatch ? error.message : `${error.name}: ${error.message}`}`)
    process.exit(1)
  }
)
