/// A UTC calendar time, converted to and from seconds since the Unix epoch without Foundation.
///
/// The conversion counts days in 400-year eras of 146 097 days, with years starting on 1 March so that the
/// leap day falls at the end of the year; all divisions are floored so dates before 1970 work too.
struct CivilTime: Equatable, Sendable {
    var year: Int64
    /// 1...12
    var month: Int64
    /// 1...31
    var day: Int64
    var hour: Int64
    var minute: Int64
    var second: Int64

    static let secondsPerDay: Int64 = 86_400
    /// Days from 0000-03-01 (proleptic Gregorian) to 1970-01-01.
    static let epochShift: Int64 = 719_468
    static let daysPerEra: Int64 = 146_097

    /// 0 = Sunday ... 6 = Saturday.
    var weekday: Int64 {
        // 1970-01-01 was a Thursday (4).
        Self.floorMod(Self.days(year: year, month: month, day: day) &+ 4, 7)
    }

    init(year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }

    init(epochSeconds: Int64) {
        let days = Self.floorDiv(epochSeconds, Self.secondsPerDay)
        let secondOfDay = epochSeconds &- days &* Self.secondsPerDay
        hour = secondOfDay / 3600
        minute = secondOfDay % 3600 / 60
        second = secondOfDay % 60

        let shifted = days &+ Self.epochShift
        let era = Self.floorDiv(shifted, Self.daysPerEra)
        let dayOfEra = shifted &- era &* Self.daysPerEra  // 0...146096
        // Year of era: remove the leap days accumulated so far (one per 4 years, minus centuries, plus the 400th).
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0...365, from 1 March
        let monthFromMarch = (5 * dayOfYear + 2) / 153  // 0...11; month lengths 31,30,31,30,31 repeat every 153 days
        day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        year = yearOfEra &+ era &* 400 &+ (month <= 2 ? 1 : 0)
    }

    var epochSeconds: Int64 {
        Self.days(year: year, month: month, day: day) &* Self.secondsPerDay &+ hour &* 3600 &+ minute &* 60 &+ second
    }

    /// Days since 1970-01-01 of a date; a day past the end of its month simply rolls into the next one.
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let yearFromMarch = year &- (month <= 2 ? 1 : 0)
        let era = floorDiv(yearFromMarch, 400)
        let yearOfEra = yearFromMarch &- era &* 400
        let monthFromMarch = month > 2 ? month - 3 : month + 9
        let dayOfYear = (153 &* monthFromMarch &+ 2) / 5 &+ day &- 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 &+ dayOfYear
        return era &* daysPerEra &+ dayOfEra &- epochShift
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a &- floorDiv(a, b) &* b }
}
