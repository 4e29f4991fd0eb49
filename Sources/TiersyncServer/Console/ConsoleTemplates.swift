/// The console's templates (Mustache, rendered by swift-mustache). Each page renders its
/// body, which the layout wraps. `{{…}}` escapes HTML; the only `{{{…}}}` is the layout's
/// `body`, which is our own rendered template. No script anywhere: forms and links only,
/// so the console works with the keyboard and a screen reader, and its Content Security
/// Policy forbids scripts outright.
enum ConsoleTemplates {
    static let layout = """
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}} · Tiersync console</title>
    <link rel="stylesheet" href="/console/console.css">
    </head>
    <body>
    <a class="skip" href="#main">Skip to content</a>
    <header>
    <p class="brand">Tiersync</p>
    {{#me}}
    <nav aria-label="Console">
    <ul>
    <li><a href="/console/nodes"{{#navNodes}} aria-current="page"{{/navNodes}}>Nodes</a></li>
    <li><a href="/console/quarantine"{{#navQuarantine}} aria-current="page"{{/navQuarantine}}>Quarantine</a></li>
    <li><a href="/console/conflicts"{{#navConflicts}} aria-current="page"{{/navConflicts}}>Conflicts</a></li>
    <li><a href="/console/trace"{{#navTrace}} aria-current="page"{{/navTrace}}>Record trace</a></li>
    <li><a href="/console/kpis"{{#navKPIs}} aria-current="page"{{/navKPIs}}>KPIs</a></li>
    <li><a href="/console/releases"{{#navReleases}} aria-current="page"{{/navReleases}}>Releases</a></li>
    <li><a href="/console/audit"{{#navAudit}} aria-current="page"{{/navAudit}}>Audit log</a></li>
    {{#tenantWide}}<li><a href="/console/users"{{#navUsers}} aria-current="page"{{/navUsers}}>Users</a></li>{{/tenantWide}}
    </ul>
    </nav>
    <p class="who">Signed in as <strong id="who">{{user}}</strong> · tenant {{tenant}}{{^tenantWide}} · scope {{scope}}{{/tenantWide}} · {{roles}}</p>
    <form method="post" action="/console/logout" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <button type="submit">Log out</button>
    </form>
    {{/me}}
    </header>
    <main id="main">
    <h1>{{title}}</h1>
    {{#flash}}<p role="status" class="flash" id="flash">{{flash}}</p>{{/flash}}
    {{#error}}<p role="alert" class="error" id="error">{{error}}</p>{{/error}}
    {{{body}}}
    </main>
    </body>
    </html>
    """

    static let login = """
    <form method="post" action="/console/login" class="login">
    <p><label for="tenant">Tenant</label><br><input id="tenant" name="tenant" required autocomplete="organization" value="{{tenant}}"></p>
    <p><label for="user">User</label><br><input id="user" name="user" required autocomplete="username" value="{{user}}"></p>
    <p><label for="password">Password</label><br><input id="password" name="password" type="password" required autocomplete="current-password"></p>
    <p><button type="submit" id="login">Log in</button></p>
    </form>
    """

    static let nodes = """
    <form method="get" action="/console/nodes" class="filters" role="search">
    <label for="q">Node id contains</label> <input id="q" name="q" value="{{q}}">
    <label for="state">State</label>
    <select id="state" name="state">
    <option value="">any</option>
    {{#states}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/states}}
    </select>
    <button type="submit">Filter</button>
    </form>
    <table id="nodes">
    <caption>{{total}} node(s) in your scope{{#filtered}} matching the filter{{/filtered}}</caption>
    <thead><tr>
    <th scope="col">Node</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Last seen</th>
    <th scope="col">Waiting to go up</th><th scope="col">Oldest waiting</th><th scope="col">Clock</th><th scope="col">Release</th><th scope="col">Overlay</th><th scope="col">Rollout</th>
    {{#canAct}}<th scope="col">Act</th>{{/canAct}}
    </tr></thead>
    <tbody>
    {{#nodes}}
    <tr id="node-{{node}}" data-state="{{state}}">
    <th scope="row" class="depth-{{depth}}" title="{{path}}">{{node}}</th>
    <td>{{role}}</td><td class="state-{{state}}">{{state}}</td><td>{{lastSeen}}</td>
    <td class="pending">{{pending}}</td><td class="oldest">{{oldest}}</td><td class="clock">{{clock}}</td><td>{{release}}</td><td>{{overlay}}</td><td>{{governance}}</td>
    {{#canAct}}<td>{{#revocable}}<form method="post" action="/console/nodes/{{node}}/revoke" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" aria-label="Revoke {{node}}">Revoke</button></form>{{/revocable}}</td>{{/canAct}}
    </tr>
    {{/nodes}}
    </tbody>
    </table>
    {{#next}}<p><a href="/console/nodes?after={{next}}&amp;q={{q}}&amp;state={{stateFilter}}" rel="next">Next page</a></p>{{/next}}
    {{#canEnroll}}
    <section aria-labelledby="enroll-heading">
    <h2 id="enroll-heading">Enroll a node</h2>
    <form method="post" action="/console/enrollment-tokens" class="stacked">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <p><label for="enroll-node">New node's id</label><br><input id="enroll-node" name="node" required maxlength="64" autocomplete="off"></p>
    <p><label for="enroll-parent">Under (its parent)</label><br><input id="enroll-parent" name="parent" required maxlength="64" value="{{scope}}"></p>
    <p><button type="submit" id="enroll">Issue a one-time token</button></p>
    </form>
    </section>
    {{/canEnroll}}
    """

    static let quarantine = """
    <p>Changes this hub refused, with the reason. Fix the cause (a route, a node's scope), then replay; or discard with a reason.</p>
    <table id="quarantine">
    <caption>{{count}} quarantined change(s){{#more}}, more on the next page{{/more}}</caption>
    <thead><tr><th scope="col">Id</th><th scope="col">Change</th><th scope="col">From</th><th scope="col">Received</th>
    <th scope="col">Reason</th>{{#canAct}}<th scope="col">Act</th>{{/canAct}}</tr></thead>
    <tbody>
    {{#changes}}
    <tr id="q-{{id}}">
    <th scope="row">{{id}}</th><td>{{origin}} #{{originSeq}}</td><td>{{receivedFrom}}</td><td>{{received}}</td>
    <td><code>{{code}}</code> {{reason}}</td>
    {{#canAct}}<td>
    <form method="post" action="/console/quarantine/{{id}}/replay" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="replay-{{id}}">Replay</button></form>
    <form method="post" action="/console/quarantine/{{id}}/discard" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="reason-{{id}}">Reason</label> <input id="reason-{{id}}" name="reason" required maxlength="500">
    <button type="submit" id="discard-{{id}}">Discard</button></form>
    </td>{{/canAct}}
    </tr>
    {{/changes}}
    </tbody>
    </table>
    {{#next}}<p><a href="/console/quarantine?after={{next}}" rel="next">Next page</a></p>{{/next}}
    """

    static let audit = """
    <p><a href="/admin/v1/audit?format=csv&amp;limit=5000" download>Export as CSV</a></p>
    <table id="audit">
    <caption>Administrative acts, newest first</caption>
    <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Target</th><th scope="col">Details</th><th scope="col">From</th></tr></thead>
    <tbody>
    {{#entries}}<tr><td>{{at}}</td><td>{{actor}}</td><td>{{action}}</td><td>{{target}}</td><td>{{detail}}</td><td>{{address}}</td></tr>{{/entries}}
    </tbody>
    </table>
    {{#next}}<p><a href="/console/audit?before={{next}}" rel="next">Older entries</a></p>{{/next}}
    """

    static let users = """
    <table id="users">
    <caption>Administrators of {{tenant}}</caption>
    <thead><tr><th scope="col">Name</th><th scope="col">Roles</th><th scope="col">Scope</th><th scope="col">State</th>{{#canAct}}<th scope="col">Act</th>{{/canAct}}</tr></thead>
    <tbody>
    {{#users}}<tr id="user-{{name}}"><th scope="row">{{name}}</th><td class="roles">{{roles}}</td><td>{{scope}}</td><td class="state">{{state}}</td>
    {{#canAct}}<td>{{^self}}<form method="post" action="/console/users/{{name}}" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="disabled" value="{{toggleTo}}">
    <button type="submit" id="toggle-{{name}}">{{toggleLabel}}</button></form>{{/self}}</td>{{/canAct}}</tr>{{/users}}
    </tbody>
    </table>
    {{#canAct}}
    <section aria-labelledby="add-user-heading">
    <h2 id="add-user-heading">Add an administrator</h2>
    <form method="post" action="/console/users" class="stacked">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <p><label for="new-name">Name</label><br><input id="new-name" name="name" required maxlength="64" autocomplete="off"></p>
    <p><label for="new-password">Password (at least {{minimumPassword}} characters)</label><br>
    <input id="new-password" name="password" type="password" required minlength="{{minimumPassword}}" autocomplete="new-password"></p>
    <p><label for="new-scope">Scope node (the tenant's root for the whole tenant, a country for its subtree)</label><br>
    <input id="new-scope" name="scope" required maxlength="64" value="{{root}}"></p>
    <fieldset><legend>Roles</legend>
    {{#roles}}<label><input type="checkbox" name="role-{{value}}" value="on" id="new-role-{{value}}"> {{value}}</label> {{/roles}}
    </fieldset>
    <p><button type="submit" id="add-user">Add</button></p>
    </form>
    </section>
    {{/canAct}}
    <p>The same with <code>tiersync admin user</code> on the hub, or the admin API.</p>
    """

    static let releases = """
    <p>Four-eyes releases are <strong id="four-eyes">{{fourEyes}}</strong>{{#fourEyesOn}}: a release is signed and rolled out only once a reviewer other than its author approves it{{/fourEyesOn}}.
    Publish with <code>POST /admin/v1/releases</code> (or <code>tiersync admin publish</code> when four-eyes is off).</p>
    <table id="requests">
    <caption>Release requests</caption>
    <thead><tr><th scope="col">Request</th><th scope="col">Asked by</th><th scope="col">When</th><th scope="col">Notes</th><th scope="col">Sources</th>
    <th scope="col">State</th><th scope="col">Decided by</th><th scope="col">Release</th>{{#canReview}}<th scope="col">Review</th>{{/canReview}}</tr></thead>
    <tbody>
    {{#requests}}
    <tr id="request-{{id}}">
    <th scope="row">{{id}}</th><td>{{author}}</td><td>{{requested}}</td><td>{{notes}}</td><td><code>{{digest}}</code></td>
    <td class="state">{{state}}</td><td>{{reviewer}}{{#decided}} at {{decided}}{{/decided}}{{#reason}}: {{reason}}{{/reason}}</td><td>{{version}}</td>
    {{#canReview}}<td>{{#pending}}
    <form method="post" action="/console/release-requests/{{id}}/approve" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="approve-{{id}}">Approve</button></form>
    <form method="post" action="/console/release-requests/{{id}}/reject" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="reject-reason-{{id}}">Reason</label> <input id="reject-reason-{{id}}" name="reason" required maxlength="500">
    <button type="submit" id="reject-{{id}}">Reject</button></form>
    {{/pending}}</td>{{/canReview}}
    </tr>
    {{/requests}}
    </tbody>
    </table>
    <table id="releases">
    <caption>Releases</caption>
    <thead><tr><th scope="col">Version</th><th scope="col">Published</th><th scope="col">Effective from</th><th scope="col">Notes</th></tr></thead>
    <tbody>{{#releases}}<tr><th scope="row">v{{version}}</th><td>{{published}}</td><td>{{effective}}</td><td>{{notes}}</td></tr>{{/releases}}</tbody>
    </table>
    <table id="rollouts">
    <caption>Rollouts (the newest is in force)</caption>
    <thead><tr><th scope="col">Rollout</th><th scope="col">Issued</th><th scope="col">Who runs what</th><th scope="col">Why</th></tr></thead>
    <tbody>{{#rollouts}}<tr><th scope="row">{{sequence}}</th><td>{{issued}}</td><td>{{summary}}</td><td>{{reason}}</td></tr>{{/rollouts}}</tbody>
    </table>
    """

    static let conflicts = """
    <p>Concurrent edits of one field: the newer won everywhere; the other is kept here. Resolving writes the value you choose
    as a new edit, which reaches every node holding the record and closes the conflict there too.</p>
    <table id="conflicts">
    <caption>{{count}} open conflict(s){{#more}}, more on the next page{{/more}}</caption>
    <thead><tr><th scope="col">Record</th><th scope="col">Field</th><th scope="col">In force</th><th scope="col">Lost</th><th scope="col">Seen</th>
    {{#canAct}}<th scope="col">Resolve</th>{{/canAct}}</tr></thead>
    <tbody>
    {{#conflicts}}
    <tr id="conflict-{{id}}">
    <th scope="row"><a href="{{traceHref}}" title="Trace this record">{{table}}/{{recordID}}</a></th><td>{{field}}</td><td class="winner">{{winner}} <small>by {{winnerNode}}</small></td>
    <td class="loser">{{loser}} <small>by {{loserNode}}</small></td><td>{{detected}}</td>
    {{#canAct}}<td>
    <form method="post" action="/console/conflicts/{{id}}/resolve" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="keep" value="winner">
    <button type="submit" id="keep-winner-{{id}}">Keep {{winner}}</button></form>
    <form method="post" action="/console/conflicts/{{id}}/resolve" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="keep" value="loser">
    <button type="submit" id="keep-loser-{{id}}">Take {{loser}}</button></form>
    <form method="post" action="/console/conflicts/{{id}}/resolve" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="keep" value="value">
    <label for="value-{{id}}">New value</label> <input id="value-{{id}}" name="value" required maxlength="2000">
    <button type="submit" id="write-{{id}}">Write</button></form>
    </td>{{/canAct}}
    </tr>
    {{/conflicts}}
    </tbody>
    </table>
    {{#next}}<p><a href="/console/conflicts?after={{next}}" rel="next">Next page</a></p>{{/next}}
    """

    static let trace = """
    <form method="get" action="/console/trace" class="filters" role="search">
    <label for="table">Table</label>
    <select id="table" name="table">{{#tables}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/tables}}</select>
    <label for="id">Record id</label> <input id="id" name="id" required maxlength="128" value="{{id}}">
    <button type="submit" id="trace">Trace</button>
    </form>
    {{#searched}}
    {{#found}}
    <p>Every change held here for <strong>{{table}}/{{id}}</strong>, oldest first: where it was written, each hop it took,
    and where it stands.</p>
    <ol id="trace-changes" class="trace">
    {{#changes}}
    <li id="change-{{position}}">
    <p><strong class="origin">{{origin}}#{{originSeq}}</strong> {{what}}</p>
    <ul>
    <li>written at {{origin}} · {{written}}</li>
    {{#hops}}<li class="hop">→ {{node}} · {{at}} (+{{after}})</li>{{/hops}}
    <li class="upstream">{{upstream}}</li>
    </ul>
    </li>
    {{/changes}}
    </ol>
    {{#compacted}}<p id="trace-compacted">The record is held here, but compaction has folded its history: no change of it is left to show.</p>{{/compacted}}
    {{#next}}<p><a href="{{next}}" rel="next">Later changes</a></p>{{/next}}
    {{/found}}
    {{^found}}<p id="trace-none">No record {{table}}/{{id}} in your scope here.</p>{{/found}}
    {{/searched}}
    """

    static let kpis = """
    <form method="get" action="/console/kpis" class="filters">
    <label for="period">Period</label>
    <select id="period" name="period">{{#periods}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/periods}}</select>
    {{#hasData}}<label for="start">From</label>
    <select id="start" name="start">{{#starts}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/starts}}</select>{{/hasData}}
    <button type="submit">Show</button>
    </form>
    {{#hasData}}<p>Each bar is a node's subtree {{#current}}this {{period}}{{/current}}{{^current}}in the {{period}}{{/current}} from <span id="period-start">{{periodStart}}</span> (UTC): its numerators and denominators added, never averaged.
    Red: the target is missed. The dashed line is the target of the release in force{{#overlay}} (or the country's overlay){{/overlay}}.</p>{{/hasData}}
    {{#charts}}
    <section aria-labelledby="{{id}}-heading">
    <h2 id="{{id}}-heading">{{name}}</h2>
    {{{svg}}}
    </section>
    {{/charts}}
    {{^charts}}<p id="no-kpis">No KPI values yet for this period: they appear once a release defines KPIs and dialogues are counted.</p>{{/charts}}
    """

    static let token = """
    <p>A one-time enrollment token for <strong>{{node}}</strong> under {{parent}}, valid until {{expires}}. It is shown once:
    hand it to whoever sets the node up (<code>tiersync-agent enroll --token …</code>).</p>
    <p><output id="token">{{token}}</output></p>
    <p><a href="/console/nodes">Back to the nodes</a></p>
    """

    static let message = """
    <p>{{message}}</p>
    <p><a href="{{back}}">Back</a></p>
    """

    static let css = """
    form.stacked { max-width: 30rem; background: #fff; padding: .6rem 1rem; border: 1px solid #d5dbe2; }
    fieldset { border: 1px solid #d5dbe2; margin: .4rem 0; }
    output#token { font-family: ui-monospace, monospace; word-break: break-all; background: #fff; padding: .3rem .5rem; border: 1px solid #d5dbe2; }
    body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d232b; background: #f6f7f9; }
    header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .6rem 1.2rem; background: #16324f; color: #fff; }
    header a, header button { color: #fff; }
    header nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
    header a[aria-current] { font-weight: 700; text-decoration: underline; }
    .brand { font-weight: 700; margin: 0; }
    .who { margin: 0 0 0 auto; }
    header button { background: transparent; border: 1px solid #fff; border-radius: 4px; padding: .2rem .6rem; cursor: pointer; }
    main { padding: 1rem 1.2rem; }
    h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
    table { border-collapse: collapse; background: #fff; width: 100%; }
    caption { text-align: left; padding: .4rem 0; font-weight: 600; }
    th, td { border-bottom: 1px solid #dde1e6; padding: .35rem .5rem; text-align: left; vertical-align: top; }
    thead th { background: #eef1f4; }
    .depth-1 { padding-left: 1.5rem; } .depth-2 { padding-left: 3rem; } .depth-3 { padding-left: 4.5rem; }
    .state-active { color: #17692b; } .state-silent { color: #a35200; } .state-decommissioned { color: #6b7280; }
    .inline { display: inline; }
    .flash { background: #e7f5ea; padding: .5rem; border-left: 4px solid #17692b; }
    .error { background: #fdecec; padding: .5rem; border-left: 4px solid #b42318; }
    .filters { margin-bottom: .8rem; }
    .skip { position: absolute; left: -999px; } .skip:focus { left: .5rem; top: .5rem; background: #fff; color: #000; padding: .3rem; }
    :focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }
    .login { max-width: 22rem; background: #fff; padding: 1rem; border: 1px solid #dde1e6; border-radius: 6px; }
    """
}
