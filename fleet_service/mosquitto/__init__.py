"""A Mosquitto the service manages: the units' passwords in the dynamic security plugin (plugin_auth, plugin_file)
or in files it rewrites and reloads (admin), and their topic ACLs (acl, dynsec)."""
