// Consumer groups through kafkajs (pure JavaScript, its own versions of the
// group APIs): two consumers in one group share a 6-partition topic
// (JoinGroup, SyncGroup, Heartbeat), then read what is produced, commit as
// they go (OffsetCommit), and
// leave (LeaveGroup); admin.fetchOffsets (OffsetFetch) then gives each
// partition's end, and describeGroups shows the group empty.
//
// Prints "ok: N records, 2 members, offsets at the ends" or exits non-zero
// with a one-line message.
//
// Usage: node group.js BOOTSTRAP

'use strict'

const crypto = require('crypto')
const { Kafka, Partitioners, logLevel } = require('kafkajs')

const bootstrap = process.argv[2]
const topic = `js-group-${crypto.randomBytes(4).toString('hex')}`
const groupId = `js-${crypto.randomBytes(4).toString('hex')}`
const PARTITIONS = 6
const COUNT = 600

function fail (message) {
  console.error(`kafkajs group: ${message}`)
  process.exit(1)
}

async function main () {
  const kafka = new Kafka({ clientId: 'keel-group-test', brokers: bootstrap.split(','), logLevel: logLevel.ERROR })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true })
  const seen = new Set()
  const owners = new Map()
  const consumers = []
  // Each member's partitions from its latest join: the records are produced
  // once the two share the topic, so both have something to read.
  const assigned = [[], []]
  for (let m = 0; m < 2; m++) {
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      assigned[m] = payload.memberAssignment[topic] || []
    })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.add(`${partition}/${message.offset}`)
        owners.set(partition, m)
      }
    })
    consumers.push(consumer)
  }
  const joined = Date.now() + 30000
  while (!(assigned[0].length > 0 && assigned[1].length > 0 && assigned[0].length + assigned[1].length === PARTITIONS)) {
    if (Date.now() > joined) fail(`the two members never shared the topic: ${JSON.stringify(assigned)}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const messages = []
  for (let i = 0; i < COUNT; i++) messages.push({ partition: i % PARTITIONS, value: `v-${i}` })
  await producer.send({ topic, acks: -1, messages })
  await producer.disconnect()

  const deadline = Date.now() + 60000
  while (seen.size < COUNT && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 200))
  if (seen.size !== COUNT) fail(`read ${seen.size} of ${COUNT} records`)
  // Let the last auto-commit go out, then leave.
  await new Promise(resolve => setTimeout(resolve, 6000))
  for (const consumer of consumers) await consumer.disconnect()
  if (new Set(owners.values()).size !== 2) fail(`one member read everything: ${[...owners]}`)

  const [fetched] = await admin.fetchOffsets({ groupId, topics: [topic] })
  for (const { partition, offset } of fetched.partitions) {
    if (Number(offset) !== COUNT / PARTITIONS) fail(`partition ${partition}: committed ${offset}, end ${COUNT / PARTITIONS}`)
  }
  const { groups } = await admin.describeGroups([groupId])
  if (groups[0].state !== 'Empty') fail(`the group is ${groups[0].state} after both members left`)
  await admin.disconnect()
  console.log(`ok: ${COUNT} records, 2 members, offsets at the ends`)
}

main().catch(error => fail(error.stack || String(error)))
