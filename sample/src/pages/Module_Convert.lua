-- Convert a value from one unit to another, with a few of the units used on enwiki.
-- This is a small excerpt; the full module is maintained at [[Module:Convert]].
local p = {}

local units = {
	m = { name = 'metre', scale = 1 },
	ft = { name = 'foot', scale = 0.3048 },
	km = { name = 'kilometre', scale = 1000 },
	mi = { name = 'mile', scale = 1609.344 },
}

function p.convert(frame)
	local args = frame.args
	local value = tonumber(args[1])
	local from, to = units[args[2]], units[args[3]]
	if not (value and from and to) then
		return '<strong class="error">Error in convert: invalid arguments</strong>'
	end
	local result = value * from.scale / to.scale
	return string.format('%s %s (%.0f %s)', args[1], from.name, result, to.name)
end

return p
