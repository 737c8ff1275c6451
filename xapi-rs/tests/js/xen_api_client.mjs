// Drive xapi-rs with the npm `xen-api` client (Xen Orchestra's connector):
// login, listMethods, get_all_records per class, event.from loop, calls.
import { createClient } from 'xen-api'

const [url, user, password] = process.argv.slice(2)
const fail = (m) => { console.error(m); process.exit(1) }
const timer = setTimeout(() => fail('TIMEOUT'), 20000)

const xapi = createClient({ url, allowUnauthorized: true, auth: { user, password } })
await xapi.connect()
if (xapi.status !== 'connected') fail('status ' + xapi.status)
// Wait for the initial object fetch.
await new Promise((r) => setTimeout(r, 1500))
const all = Object.values(xapi.objects.all)
const count = (t) => all.filter((o) => o.$type === t).length
if (count('host') !== 1 || count('pool') !== 1 || count('host_cpu') < 1 || count('host_metrics') !== 1) {
  fail('objects: ' + JSON.stringify(all.map((o) => o.$type)))
}
const host = all.find((o) => o.$type === 'host')
if (host.API_version_major !== 2) fail('API_version_major ' + host.API_version_major)
const renamed = new Promise((resolve) =>
  xapi.objects.on('update', (objs) => {
    for (const o of Object.values(objs)) if (o.$type === 'pool' && o.name_label === 'npm pool') resolve(o)
  })
)
await xapi.call('pool.set_name_label', xapi.pool.$ref, 'npm pool')
await renamed
const free = await xapi.callAsync('host.compute_free_memory', host.$ref)
if (String(free) !== '8589934592') fail('async result ' + free)
try {
  await xapi.call('host.get_record', 'OpaqueRef:nope')
  fail('expected HANDLE_INVALID')
} catch (e) {
  if (e.code !== 'HANDLE_INVALID') fail('error ' + e)
}
await xapi.disconnect()
clearTimeout(timer)
console.log('NPM-OK')
